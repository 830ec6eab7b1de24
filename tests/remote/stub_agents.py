"""Tiny stand-in agents (same remote_main contract) to drive transport edge cases."""

_TEMPLATE = '''
import json, sys, time
def remote_main(request_bytes):
    req = json.loads(request_bytes)
    {body}
'''


def stub(body: str) -> bytes:
    """Agent source whose remote_main runs `body` (indented one level; `req` is the request)."""
    lines = body.strip("\n").splitlines()
    return _TEMPLATE.replace("{body}", "\n    ".join(lines)).encode()


SLEEPER = stub("time.sleep(req['args'].get('seconds', 5))\nreturn 0")
GARBAGE = stub("sys.stdout.write('Segmentation fault (core dumped)\\n<html>oops</html>')\nreturn 0")
TWO_DOCS = stub(
    "d = json.dumps({'ok': True, 'op': req['op'], 'result': {}})\nsys.stdout.write(d + d)\nreturn 0"
)
WRONG_SHAPE = stub("sys.stdout.write(json.dumps({'ok': 'yes', 'op': req['op']}))\nreturn 0")
OK_ECHO = stub(
    "sys.stderr.write('note on stderr\\n')\n"
    "sys.stdout.write(json.dumps({'ok': True, 'op': req['op'], 'request_id': req['request_id'],"
    " 'result': {'args': req['args']}}))\nreturn 0"
)
AGENT_ERROR = stub(
    "sys.stdout.write(json.dumps({'ok': False, 'op': req['op'], 'request_id': req['request_id'],"
    " 'error': {'code': 'ebusy', 'message': 'busy', 'details': {}}}))\nreturn 1"
)

# A compromised host: floods stdout (50 MiB) or stderr (50 MiB), or nests JSON beyond the parser.
FLOOD_STDOUT = stub(
    "chunk = 'x' * (1024 * 1024)\nfor _ in range(50):\n    sys.stdout.write(chunk)\nsys.stdout.flush()\nreturn 0"
)
FLOOD_STDERR = stub(
    "chunk = 'e' * (1024 * 1024)\nfor _ in range(50):\n    sys.stderr.write(chunk)\nsys.stderr.flush()\nreturn 0"
)
DEEP_JSON = stub("sys.stdout.write('[' * 200000 + ']' * 200000)\nreturn 0")

__all__ = ["stub", "SLEEPER", "GARBAGE", "TWO_DOCS", "WRONG_SHAPE", "OK_ECHO", "AGENT_ERROR", "FLOOD_STDOUT",
           "FLOOD_STDERR", "DEEP_JSON"]
