# Change requests, plans, approvals, rollouts, host runs and steps (issue 6).
