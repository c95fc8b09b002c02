"""The evaluation service's HTTP API (FastAPI):

  POST /submit     {method, run, who, split, [dataset, seed, weak, strong, submission_id],
                    predictions: {id: p1 | [p_0..p_K-1]}}
                   -> {accuracy, auc, pgr, pgr_auc, n, subsets: {name: {...}}, anchors, ...}
  GET  /health     what the store holds (datasets, classes, seeds, sizes) and the rules
  GET  /baselines  the fixed anchors of PGR: weak and ceiling means over seeds per pair

Answers are aggregate only: the response models below have no per-example field, so nothing
per example can leave even by mistake. Every call, refused ones too, is one line of the log
(ledger.py), written before the answer is sent. Errors are {"error": one line naming the field
and the fix} with 422 (malformed), 409 (scored already), 429 (budget spent), 404 (no such path).

FastAPI is imported inside make_app: `w2s` works without the `serve` extra until a server is
started. (No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations
at run time, and `Request` is imported inside make_app.) A body above MAX_BODY_BYTES is refused
with 413 before it is read.
"""
import uuid
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from w2s_scale.service.ledger import SUBMIT, Ledger, digest, submission_key
from w2s_scale.service.scoring import SubmissionError, Target, resolve, score_submission
from w2s_scale.service.store import LabelStore, now

NAME = Field(min_length=1, max_length=200)
HELP = "fields: method, run, who, split, predictions (docs/isolation.md)"
# far above a split of 100,000 examples with K = 10 probabilities each (about 15 MB)
MAX_BODY_BYTES = 256 * 2**20
# what is echoed into the log from a body that failed validation (never the predictions)
ECHOED = ("who", "method", "run", "split", "dataset", "seed", "submission_id")


class Submission(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: str = NAME                       # the method (its budget is counted per name)
    run: str = NAME                          # one run of it; (method, run, split) is scored once
    who: str = NAME                          # the person or job that submits
    split: Literal["test", "b"] = "test"
    dataset: Optional[str] = None            # may be left out where the store has one choice
    seed: Optional[int] = None
    weak: Optional[str] = None               # the pair whose baselines anchor PGR
    strong: Optional[str] = None
    submission_id: Optional[str] = Field(default=None, min_length=1, max_length=100)  # retries
    predictions: dict[str, Any]              # checked value by value in scoring.py


class Scores(BaseModel):
    accuracy: float
    auc: Optional[float]
    pgr: Optional[float]
    pgr_auc: Optional[float]
    n: int


class Anchors(BaseModel):
    weak: Optional[str]
    strong: Optional[str]
    weak_acc: Optional[float] = None
    ceiling_acc: Optional[float] = None
    weak_auc: Optional[float] = None
    ceiling_auc: Optional[float] = None
    weak_seeds: list[int] = []
    ceiling_seeds: list[int] = []


class Scored(Scores):
    submission_id: str
    method: str
    run: str
    who: str
    split: str
    dataset: str
    seed: int
    scored_at: str
    replayed: bool = False           # a retry of a submission scored before: its first answer
    subsets: dict[str, Scores]
    anchors: Anchors                 # what PGR is measured against (test only)
    budget_left: Optional[int] = None


def make_app(store: LabelStore, ledger: Ledger, budget: Optional[int] = None,
             allow_resubmit: bool = False):
    try:
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import JSONResponse
        from starlette.exceptions import HTTPException
    except ImportError:
        raise SubmissionError("the evaluation service needs FastAPI: pip install -e '.[serve]'",
                              500) from None

    app = FastAPI(title="w2s evaluation service", docs_url=None, redoc_url=None)

    def client(request: Request) -> Optional[str]:
        return request.client.host if request.client else None

    def refuse(request: Request, status: int, message: str, **fields) -> JSONResponse:
        ledger.append({"call": f"{request.method} {request.url.path}", "status": status,
                       "client": client(request), **fields, "error": message})
        request.state.logged = True
        return JSONResponse({"error": message}, status_code=status)

    @app.middleware("http")
    async def log_every_call(request: Request, call_next):
        request.state.logged = False
        size = request.headers.get("content-length", "0")
        if not size.isdigit() or int(size) > MAX_BODY_BYTES:
            return refuse(request, 413, f"the body is {size} bytes, above the service's "
                                        f"{MAX_BODY_BYTES:,}; submit one split of one run at a time")
        try:
            response = await call_next(request)
        except Exception as err:  # a bug: logged, then Starlette answers 500
            ledger.append({"call": f"{request.method} {request.url.path}", "status": 500,
                           "client": client(request), "error": f"{type(err).__name__}: {err}"})
            raise
        if not request.state.logged:
            ledger.append({"call": f"{request.method} {request.url.path}",
                           "status": response.status_code, "client": client(request)})
        return response

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, exc: RequestValidationError):
        problems = exc.errors()
        first = problems[0] if problems else {"loc": (), "msg": "not a submission"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        body = exc.body if isinstance(exc.body, dict) else {}
        echoed = {k: _clip(body[k]) for k in ECHOED if k in body}
        return refuse(request, 422, f"{where}: {first.get('msg')}{more}; {HELP}", **echoed)

    @app.exception_handler(HTTPException)
    async def no_such_path(request: Request, exc: HTTPException):
        return refuse(request, exc.status_code,
                      f"{request.method} {request.url.path}: {exc.detail}; the service answers "
                      f"GET /health, GET /baselines and POST /submit")

    @app.get("/health")
    def health(request: Request) -> dict:
        sizes: dict[str, dict] = {}
        for (dataset, seed, split), part in sorted(store.parts.items()):
            sizes.setdefault(dataset, {}).setdefault(f"seed{seed}", {})[split] = len(part.ids)
        # not the store's config and results paths: the finished runs there hold labels too
        answer = {"status": "ok", "experiment": store.info.get("experiment"),
                  "exported": store.info.get("exported"), "budget": budget,
                  "allow_resubmit": allow_resubmit,
                  "datasets": {d: {"classes": store.classes[d], "seeds": store.seeds(d),
                                   "sizes": sizes.get(d, {})} for d in store.datasets}}
        ledger.append({"call": "GET /health", "status": 200, "client": client(request)})
        request.state.logged = True
        return answer

    @app.get("/baselines")
    def baselines(request: Request) -> dict:
        answer = {"baselines": [b.summary() for b in store.baselines]}
        ledger.append({"call": "GET /baselines", "status": 200, "client": client(request)})
        request.state.logged = True
        return answer

    @app.post("/submit", response_model=Scored)
    def submit(sub: Submission, request: Request):
        fields = sub.model_dump(exclude={"predictions"})
        fields["submission_id"] = sub.submission_id or uuid.uuid4().hex
        call = {"call": SUBMIT, "client": client(request), **fields,
                "n_predictions": len(sub.predictions), "predictions_sha256": digest(sub.predictions)}
        # checks, scoring and the log line under one lock: two submissions of one run cannot
        # both pass the duplicate check, and a budget cannot be overspent by racing calls
        with ledger.exclusive():
            try:
                target = resolve(store, sub.split, sub.dataset, sub.seed, sub.weak, sub.strong)
                call.update(dataset=target.dataset, seed=target.seed,
                            weak=target.baseline.weak if target.baseline else None,
                            strong=target.baseline.strong if target.baseline else None)
                first = _retry_of(ledger, call)
                if first is not None:  # the same submission again (its answer was lost): no new score
                    ledger.append({**call, "status": 200, "replayed": True,
                                   "response": first["response"]})
                    request.state.logged = True
                    return {**first["response"], "replayed": True}
                _check_allowed(ledger, call, budget, allow_resubmit)
                result = score_submission(target, sub.predictions)
            except SubmissionError as err:
                return refuse(request, err.status, str(err),
                              **{k: v for k, v in call.items() if k != "call" and k != "client"})
            response = _answer(sub, call, target, result, ledger.spent[sub.method] + 1, budget)
            ledger.append({"time": response["scored_at"], **call, "status": 200,
                           "response": response})
            request.state.logged = True
            return response

    return app


def _answer(sub: Submission, call: dict, target: Target, result: dict, spent: int,
            budget: Optional[int]) -> dict:
    """The answer to a scored submission, through the response models (nothing else passes)."""
    anchors = {"weak": call["weak"], "strong": call["strong"]}
    if target.baseline is not None and target.split == "test":
        summary = target.baseline.summary()
        anchors.update({k: summary[k] for k in Anchors.model_fields if k in summary})
    return Scored(submission_id=call["submission_id"], method=sub.method, run=sub.run,
                  who=sub.who, split=sub.split, dataset=target.dataset, seed=target.seed,
                  scored_at=now(), anchors=Anchors(**anchors),
                  budget_left=None if budget is None else max(budget - spent, 0),
                  **{k: result[k] for k in Scores.model_fields},
                  subsets={name: Scores(**s) for name, s in result["subsets"].items()}
                  ).model_dump()


def _clip(value: Any, limit: int = 200) -> Any:
    """A name as messages and the log show it: numbers as they are, the rest as text of at most
    `limit` characters."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return str(value)[:limit]


def _retry_of(ledger: Ledger, call: dict) -> Optional[dict]:
    """The scored entry this call repeats (same submission id, run and predictions), if any;
    a known id with another run or other predictions is refused."""
    first = ledger.by_id.get(call["submission_id"])
    if first is None:
        return None
    if (submission_key(first) != submission_key(call)
            or first.get("predictions_sha256") != call["predictions_sha256"]):
        raise SubmissionError(f"submission_id: {_clip(call['submission_id'])} was scored "
                              f"already for other predictions or another run; leave it out (the "
                              f"client makes a new one per submission)", 409)
    return first


def _check_allowed(ledger: Ledger, call: dict, budget: Optional[int], allow_resubmit: bool) -> None:
    method, run, split = submission_key(call)
    before = ledger.previous(submission_key(call))
    if before is not None and not allow_resubmit:
        raise SubmissionError(
            f"method {_clip(method)} run {_clip(run)} split {split} was scored already (at "
            f"{before['time']} by {_clip(before.get('who'))}); a run is scored once: submit a "
            f"new run, or start the server with --allow-resubmit", 409)
    if budget is not None and ledger.spent[method] >= budget:
        raise SubmissionError(
            f"method {_clip(method)} has used its budget of {budget} scored submission(s); no "
            f"more are scored for it (raise --budget when the server starts, if that is "
            f"intended)", 429)
