"""The lockstep test harness, in parts: config (budgets, the model oracle), session (the real
loop on real fds, with checks), printing, runner (lockstep, replay, minimise), machine (the
Hypothesis state machine), r34 (fd-number reuse), exploration (exhaustive, model only)."""
