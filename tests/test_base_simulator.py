"""The request pipeline every simulator shares (simulators.base), on a toy API with one route."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from flask import Flask, Response, request

from simulators import FaultKnobs
from simulators.base import ApiSimulator, Call, ErrorAnswer, ForeignAnswer


class ToyError(ErrorAnswer):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class ToyCall(Call):
    name: str
    steps: list[str]


class ToySimulator(ApiSimulator[ToyCall, str]):
    """Answers ``/<name>`` with ``{"ok": name}``; ``?fail=<step>`` makes that step refuse."""

    def __init__(self, faults: FaultKnobs | None = None) -> None:
        super().__init__(faults)
        self.log: list[list[str]] = []
        self.state: list[str] = []
        self.app = Flask("toy")
        self.app.add_url_rule("/<name>", view_func=self._view, methods=["GET", "POST"])

    def _view(self, name: str) -> Response:
        call = ToyCall(name=name, steps=[])
        self.log.append(call.steps)
        return self.answer(call)

    def _step(self, call: ToyCall, step: str) -> None:
        call.steps.append(step)
        if request.args.get("fail") == step:
            raise ToyError(418, f"{step} refused")

    def authenticate(self, call: ToyCall) -> None:
        self._step(call, "authenticate")

    def resolve(self, call: ToyCall) -> None:
        self._step(call, "resolve")

    def admit(self, call: ToyCall) -> None:
        self._step(call, "admit")
        if request.args.get("fail") == "cdn":
            raise ForeignAnswer(Response("<h1>blocked</h1>", 403, mimetype="text/html"))

    def transient_error(self, call: ToyCall) -> Exception:
        call.steps.append("transient_error")
        return ToyError(503, "try later")

    def handle(self, call: ToyCall) -> str:
        self._step(call, "handle")
        if call.name == "bug":
            raise KeyError("a simulator bug")
        if request.method == "POST":
            self.state.append(call.name)
            call.wrote = True
        return call.name

    def internal_error(self, call: ToyCall) -> ToyError:
        return ToyError(500, "internal")

    def success(self, call: ToyCall, result: str) -> Response:
        call.steps.append("success")
        return Response(json.dumps({"ok": result}), 200, mimetype="application/json")

    def error(self, call: ToyCall, exc: ErrorAnswer) -> Response:
        assert isinstance(exc, ToyError)
        call.steps.append(f"error {exc.status}")
        return Response(json.dumps({"error": exc.message}), exc.status, mimetype="application/json")


@pytest.fixture
def sim() -> Iterator[ToySimulator]:
    simulator = ToySimulator(FaultKnobs(seed=1))
    yield simulator
    simulator.close()


def test_steps_run_in_order_and_the_envelope_wraps_the_result(sim: ToySimulator) -> None:
    resp = sim.app.test_client().get("/deal")
    assert resp.status_code == 200 and resp.get_json() == {"ok": "deal"}
    assert sim.log == [["authenticate", "resolve", "admit", "handle", "success"]]


@pytest.mark.parametrize("step", ["authenticate", "resolve", "admit", "handle"])
def test_a_refusing_step_stops_the_pipeline_in_the_error_envelope(sim: ToySimulator, step: str) -> None:
    resp = sim.app.test_client().post("/deal", query_string={"fail": step})
    assert resp.status_code == 418 and resp.get_json() == {"error": f"{step} refused"}
    steps = ["authenticate", "resolve", "admit", "handle"]
    assert sim.log == [[*steps[: steps.index(step) + 1], "error 418"]]
    assert sim.state == []


def test_a_foreign_answer_is_passed_through_as_is(sim: ToySimulator) -> None:
    resp = sim.app.test_client().get("/deal", query_string={"fail": "cdn"})
    assert resp.status_code == 403 and resp.get_data(as_text=True) == "<h1>blocked</h1>"
    assert sim.log == [["authenticate", "resolve", "admit"]]


def test_a_transient_fault_comes_after_admission_and_before_any_effect(sim: ToySimulator) -> None:
    sim.faults.error_rate = 1.0
    resp = sim.app.test_client().post("/deal")
    assert resp.status_code == 503 and resp.get_json() == {"error": "try later"}
    assert sim.log == [["authenticate", "resolve", "admit", "transient_error", "error 503"]]
    assert sim.state == [] and sim.faults.injected["server_error"] == 1


def test_an_answer_lost_after_a_write_keeps_the_write(sim: ToySimulator) -> None:
    sim.faults.error_after_effect_rate = 1.0
    client = sim.app.test_client()
    assert client.get("/read").status_code == 200  # a read changed nothing: its answer is never lost
    resp = client.post("/deal")
    assert resp.status_code == 500 and resp.get_json() == {"error": "internal"}
    assert sim.state == ["deal"] and sim.faults.injected["answer_lost_after_write"] == 1


def test_a_simulator_bug_answers_the_apis_500_and_is_logged(
    sim: ToySimulator, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="simulators.base"):
        resp = sim.app.test_client().get("/bug")
    assert resp.status_code == 500 and resp.get_json() == {"error": "internal"}
    assert "ToySimulator failed on GET /bug" in caplog.text


def test_latency_applies_to_every_answer_refusals_included(sim: ToySimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("simulators.faults.time.sleep", slept.append)
    sim.faults.latency = (0.25, 0.25)
    client = sim.app.test_client()
    client.get("/deal")
    client.get("/deal", query_string={"fail": "authenticate"})
    assert slept == [0.25, 0.25]
