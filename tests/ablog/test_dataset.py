"""The join of outcomes to predictions (pure: records in, arrays out, no storage), and the
time prefixes the report lists."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from shared.ablog.dataset import build_dataset, time_prefixes
from tests.azurite_support import new_container

T0 = datetime(2026, 11, 24, 10, tzinfo=UTC).timestamp()
SINCE = datetime(2026, 11, 24, tzinfo=UTC)
UNTIL = datetime(2026, 11, 26, tzinfo=UTC)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def pred(rid, t, variant="a", key=None, p=(0.3,), shadow=False, index=None):
    doc = {"time": iso(t), "endpoint": "churn", "request_id": rid, "trigger": "http",
           "variant": variant, "shadow": shadow, "model": {"name": variant, "version": "1"},
           "objective": "binary", "output": "predict", "rows": len(p), "predictions": list(p),
           "latency_ms": 1.0}
    if key is not None:
        doc["key"] = key
    if index is not None:
        doc["variant_index"] = index
    return doc


def out(label, t, received=None, **ids):
    return {"label": label, "time": t, "received": received if received is not None else t, **ids}


def test_by_request_id_single_and_multi_row():
    docs = [pred("r1", T0, p=(0.1,)), pred("r2", T0 + 1, p=(0.2, 0.7, 0.9))]
    outcomes = [out(1, T0 + 100, request_id="r1"),
                out(0, T0 + 100, request_id="r2"),            # ambiguous: 3 rows, no row
                out(1, T0 + 100, request_id="r2", row=1),
                out(1, T0 + 100, request_id="r2", row=3),     # no such row
                out(1, T0 + 100, request_id="nope")]
    ds = build_dataset("churn", docs, outcomes, since=SINCE, until=UNTIL)
    a = ds.variants["a"]
    assert a.y.tolist() == [1, 1] and a.p.tolist() == [0.1, 0.7]
    j = ds.join
    assert (j.by_request_id, j.ambiguous, j.bad_row, j.unmatched) == (2, 1, 1, 1)


def test_by_key_the_latest_prediction_at_or_before_the_outcome():
    docs = [pred("r1", T0, key="u", p=(0.1,)), pred("r2", T0 + 60, key="u", p=(0.2,)),
            pred("r3", T0 + 120, key="u", p=(0.3,)), pred("r4", T0 + 10, key="v", p=(0.4,))]
    outcomes = [out(1, T0 + 61, key="u"),   # after r2, before r3 -> r2
                out(0, T0 + 60, key="u", received=T0 + 500),  # exactly at r2: r2, received later: wins
                out(1, T0 + 5, key="v"),    # before v's only prediction: unmatched
                out(1, T0 - 1, key="u"),    # before any of u's: unmatched
                out(1, T0 + 999, key="w")]  # unknown key
    ds = build_dataset("churn", docs, outcomes, since=SINCE, until=UNTIL)
    a = ds.variants["a"]
    assert a.p.tolist() == [0.2] and a.y.tolist() == [0]  # the later-received correction
    j = ds.join
    assert (j.by_key, j.superseded, j.unmatched) == (1, 1, 3)


def test_a_reused_request_id_joins_the_latest_before_the_outcome():
    docs = [pred("dup", T0, p=(0.1,)), pred("dup", T0 + 100, p=(0.9,))]
    ds = build_dataset("churn", docs, [out(1, T0 + 50, request_id="dup"),
                                       out(0, T0 - 50, request_id="dup")], since=SINCE, until=UNTIL)
    # the first outcome joins the one at T0; the second (before both) the earliest, also T0:
    # two outcomes for one prediction, the one received last counts
    assert ds.variants["a"].p.tolist() == [0.1] and ds.variants["a"].y.tolist() == [1]
    assert ds.join.superseded == 1


def test_labels_that_do_not_fit_a_binary_model_are_left_out():
    docs = [pred("r1", T0), pred("r2", T0)]
    ds = build_dataset("churn", docs, [out(0.5, T0 + 1, request_id="r1"), out(1, T0 + 1, request_id="r2")],
                       since=SINCE, until=UNTIL)
    assert ds.variants["a"].y.tolist() == [1] and ds.join.bad_label == 1


def test_shadows_pair_with_the_answer_and_inherit_its_labels():
    docs = [pred("r1", T0, variant="a", p=(0.2,), index=0), pred("r2", T0, variant="b", p=(0.6,), index=1),
            pred("r1", T0 + 0.01, variant="s", p=(0.4,), shadow=True),
            pred("r2", T0 + 0.01, variant="s", p=(0.5,), shadow=True)]
    ds = build_dataset("churn", docs, [out(1, T0 + 5, request_id="r1")], since=SINCE, until=UNTIL)
    assert list(ds.variants) == ["a", "b"] and ds.first_variant == "a"
    assert list(ds.shadows) == ["s"]
    pairs = {(p.shadow, p.answer_variant): p for p in ds.pairs}
    pa = pairs[("s", "a")]
    assert pa.answer.tolist() == [0.2] and pa.shadow_p.tolist() == [0.4] and pa.y.tolist() == [1]
    assert np.isnan(pairs[("s", "b")].y).all()


def test_the_time_range_and_other_outputs_are_respected():
    docs = [pred("old", SINCE.timestamp() - 1), pred("in", T0),
            {**pred("raw", T0), "output": "raw_score"}, {**pred("other", T0), "endpoint": "x"},
            {"time": "garbage"}]
    ds = build_dataset("churn", docs, [], since=SINCE, until=UNTIL)
    assert ds.variants["a"].requests == 1
    assert ds.excluded_records == {"outside the time range": 1, "raw_score output (not predictions)": 1,
                                   "another endpoint": 1, "damaged": 1}


def test_time_prefixes_use_days_inside_and_hours_at_the_edges():
    since = datetime(2026, 11, 23, 22, 30, tzinfo=UTC)
    until = datetime(2026, 11, 25, 1, 10, tzinfo=UTC)
    assert time_prefixes("churn", since, until) == [
        "churn/2026/11/23/22/", "churn/2026/11/23/23/", "churn/2026/11/24/",
        "churn/2026/11/25/00/", "churn/2026/11/25/01/"]
    assert time_prefixes("churn", until, until) == []


def test_analysis_and_rendering_for_every_objective_over_several_days(tmp_path):
    from scorefn.ab.render import write_report
    from scorefn.ab.report import analyse

    rng = np.random.default_rng(3)
    day = 86400.0
    for objective in ("binary", "regression", "multiclass"):
        docs, outcomes = [], []
        for i in range(900):
            variant = "a" if i % 2 else "b"
            t = T0 + (i % 3) * day + i
            truth = rng.random()
            if objective == "binary":
                label = int(rng.random() < truth)
                p = [float(np.clip(truth + rng.normal(scale=0.2 if variant == "a" else 0.4), 0, 1))]
            elif objective == "regression":
                label = truth * 10
                p = [label + float(rng.normal(scale=1 if variant == "a" else 2))]
            else:
                label = int(truth * 3)
                q = np.full(3, 0.2)
                q[label if rng.random() < (0.8 if variant == "a" else 0.5) else (label + 1) % 3] = 0.6
                p = [q.tolist()]
            doc = pred(f"r{i}", t, variant=variant, p=p, index=0 if variant == "a" else 1)
            doc["objective"] = {"binary": "binary", "regression": "regression",
                                "multiclass": "multiclass"}[objective]
            docs.append(doc)
            outcomes.append(out(label, t + 1, request_id=f"r{i}"))
        ds = build_dataset("churn", docs, outcomes, since=SINCE, until=datetime(2026, 11, 28, tzinfo=UTC))
        assert ds.objective == objective
        report = analyse(ds)
        assert report["control"] == "a" and report["primary_metric"] == {
            "binary": "auc", "regression": "rmse", "multiclass": "log_loss"}[objective]
        assert sorted({d["day"] for d in report["daily"]}) == ["2026-11-24", "2026-11-25", "2026-11-26"]
        (cmp,) = report["comparisons"]
        assert cmp["verdict"] == "worse", (objective, cmp["text"])  # b is the noisier model
        for name in ("r.html", "r.md"):
            write_report(tmp_path / f"{objective}-{name}", report, ds)
        assert "worse than a" in (tmp_path / f"{objective}-r.html").read_text()


def test_an_outcome_by_key_after_the_range_never_joins_an_older_prediction():
    day = 86400
    docs = [pred("r1", T0, key="u", p=(0.1,)),               # inside [SINCE, UNTIL)
            pred("r2", UNTIL.timestamp() + day, key="u", p=(0.9,))]  # after UNTIL
    ds = build_dataset("churn", docs, [out(1, UNTIL.timestamp() + day + 3600, key="u")],
                       since=SINCE, until=UNTIL)
    assert ds.variants["a"].y.size == 0  # not given to r1
    assert ds.join.outside_range == 1 and ds.join.unmatched == 0
    assert ds.variants["a"].requests == 1  # r2 is not part of the arms either


def test_requests_whose_caller_pinned_the_variant_stay_out_of_the_arms():
    docs = [pred("r1", T0, variant="a", key="u1"), pred("r2", T0 + 1, variant="b", key="u2"),
            {**pred("r3", T0 + 2, variant="b", key="qa"), "pinned": True}]
    outcomes = [out(1, T0 + 10, request_id=r) for r in ("r1", "r2", "r3")]
    ds = build_dataset("churn", docs, outcomes, since=SINCE, until=UNTIL)
    assert ds.variants["b"].requests == 1 and ds.variants["b"].y.tolist() == [1.0]
    assert ds.join.pinned == 1 and ds.join.by_request_id == 2
    assert ds.excluded_records == {"variant pinned by the caller (not randomised)": 1}


def test_outcomes_are_clustered_by_user_and_by_request_without_a_key():
    docs = [pred("r1", T0, key="u", p=(0.1, 0.2)), pred("r2", T0 + 1, key="u", p=(0.3,)),
            pred("r3", T0 + 2, p=(0.4, 0.5))]
    outcomes = [out(1, T0 + 9, request_id="r1", row=0), out(0, T0 + 9, request_id="r1", row=1),
                out(1, T0 + 9, request_id="r2"), out(0, T0 + 9, request_id="r3", row=0),
                out(1, T0 + 9, request_id="r3", row=1)]
    a = build_dataset("churn", docs, outcomes, since=SINCE, until=UNTIL).variants["a"]
    assert a.y.size == 5 and a.units == 2  # user u (r1, r2) and the keyless request r3
    assert len(set(a.g[:3].tolist())) == 1 and a.g[3] == a.g[4] != a.g[0]


def test_the_report_reads_outcomes_received_before_outcomes_until_and_predictions_for_late_keys(
        blob_service, tmp_path):
    import orjson

    from scorefn.ab.report import ReportOptions, make_report
    from shared.ablog.dataset import Progress

    since, until = datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 22, tzinfo=UTC)
    t0 = datetime(2026, 11, 20, 10, tzinfo=UTC).timestamp()
    late = until.timestamp() + 3 * 3600  # a prediction for key u0 after --until

    def folder(t: float) -> str:
        return f"churn/{datetime.fromtimestamp(t, UTC):%Y/%m/%d/%H}/i.jsonl"

    preds = new_container(blob_service, prefix="p")
    outs = new_container(blob_service, prefix="o")
    lines = [pred(f"r{i}", t0 + i, key=f"u{i % 40}", p=(0.1 + 0.01 * i,)) for i in range(60)]
    preds.upload_blob(folder(t0), b"\n".join(orjson.dumps(d) for d in lines))
    preds.upload_blob(folder(late), orjson.dumps(pred("late", late, key="u0", p=(0.99,))))
    early, later = t0 + 3600, t0 + 3600 + 45 * 60  # received 11:00 and 11:45
    outs.upload_blob(folder(early), b"\n".join(orjson.dumps(
        {"time": iso(early), "received": iso(early if i % 2 else later), "request_id": f"r{i}",
         "label": i % 2}) for i in range(1, 60)))
    outs.upload_blob(folder(late), orjson.dumps(
        {"time": iso(late + 60), "received": iso(late + 60), "key": "u0", "label": 1}))
    quiet = Progress(open("/dev/null", "w"))
    analysis = make_report(preds, outs, ReportOptions(endpoint="churn", out=tmp_path / "r.md",
                                                      since=since, until=until), progress=quiet)
    join = analysis["join"]
    # The key outcome after --until belongs to the late prediction: outside the range, not r0.
    assert join["outside_range"] == 1 and join["by_key"] == 0 and join["by_request_id"] == 59
    bounded = ReportOptions(endpoint="churn", out=tmp_path / "r2.md", since=since, until=until,
                            outcomes_until=datetime.fromtimestamp(t0 + 3600 + 30 * 60, UTC))
    assert make_report(preds, outs, bounded, progress=quiet)["join"]["by_request_id"] == 30
    preds.delete_container()
    outs.delete_container()


def test_a_null_prediction_in_the_log_is_counted_not_ranked():
    docs = [pred("r1", T0, p=(0.2,)), pred("r2", T0 + 1, p=(None,)), pred("r3", T0 + 2, p=(0.7,))]
    outcomes = [out(0, T0 + 9, request_id="r1"), out(0, T0 + 9, request_id="r2"),
                out(1, T0 + 9, request_id="r3")]
    ds = build_dataset("churn", docs, outcomes, since=SINCE, until=UNTIL)
    assert ds.variants["a"].p.tolist() == [0.2, 0.7] and ds.join.no_prediction == 1
