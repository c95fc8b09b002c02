"""The label-isolated evaluation service (docs/isolation.md): a server that holds the ground truth
of B and test and the fixed baselines, and answers a submission of predictions with accuracy,
AUC and PGR, never with per-example correctness.

One job per module, floors bottom to top:
  store     the exported label store on disk (ground truth and baselines), read and written
  scoring   a submission's predictions checked and scored with the project's own metrics
  ledger    the append-only log of every call, and what it implies (duplicates, budgets)
  discovery how jobs find the service (W2S_EVAL_URL, the URL file) and the pending folder
  app       the FastAPI app: /submit, /health, /baselines
  server    uvicorn around the app: the foreground `w2s serve`, a thread for tests and embedding
  client    httpx client: finding the service, submitting, keeping predictions when it is down
  export    the label store built from a finished experiment or sweep (its splits and gt runs)
  commands  the `w2s serve` and `w2s submit` commands
"""
