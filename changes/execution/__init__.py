"""Executing approved changes: the database is the truth, Celery tasks only move it.

    rollout.advance(rollout_id)          idempotent; starts host runs, halts, finishes
    host_run.run_host(host_run_id, token) one host: claim, drift check, actions, verify
    boot_wait.await_boot(host_run_id, token) one look at a rebooting host; re-schedules itself
    recovery.resume_stale() / kick_rollouts() beat: resume what a lost worker left, advance stalled rollouts

locks.py documents the lock order, transitions.py the state machines, ownership.py who drives a
host run, steps.py/records.py the recorded agent calls, compare.py drift check and verification.
"""
