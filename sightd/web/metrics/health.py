"""/healthz: whether every component of the pipeline is online, and why not, from a BusState."""

from __future__ import annotations

from typing import Any

from sightd.web.metrics.state import BusState, count, text


def health(state: BusState) -> tuple[bool, dict[str, Any]]:
    """(healthy, report): healthy while every judged component is online and heard from.

    Judged are the expected components and every child the supervisor reports, but never
    this server itself; the report lists every component heard, with its problems.
    """
    with state.lock:
        now = state.clock()
        judged = {*state.expected, *state.children} - {state.own}
        reasons, components = [], {}
        for name in state.names():
            if name == state.own:
                continue
            problems = _problems(state, name, now)
            components[name] = _entry(state, name, now, problems)
            if name in judged:
                reasons.extend(f"{name}: {problem}" for problem in problems)
        report: dict[str, Any] = {"status": "unavailable" if reasons else "ok"}
        if reasons:
            report["reasons"] = reasons
        report["components"] = components
        return not reasons, report


def _problems(state: BusState, name: str, now: float) -> list[str]:
    child = state.children.get(name, {})
    failure = text(child.get("last_failure"))
    because = f" (last failure: {failure})" if failure else ""
    if name in state.given_up or child.get("state") == "given-up":
        restarts = count(child.get("restarts"))
        after = f" after {restarts:.0f} restarts" if restarts is not None else ""
        return [f"given up{after}{because}"]
    if child.get("state") == "backoff":
        return [f"restarting{because}"]
    component = state.components.get(name)
    if component is None or component.heard_at is None:
        waited = now - state.started_at
        return [f"not heard from (listening for {waited:.1f} s)"]
    problems = []
    silent = now - component.heard_at
    if silent > state.silence():
        problems.append(
            f"not heard from for {silent:.1f} s (status every {state.status_interval:g} s)"
        )
    said = text(component.body.get("state")) or "no state in its status"
    if said != "online":
        reason = text(component.body.get("reason")) or text(component.body.get("error"))
        problems.append(f"{said}: {reason}" if reason else said)
    elif component.restarted_at is not None:
        problems.append(f"restarted{because}; not online since")
    return problems


def _entry(state: BusState, name: str, now: float, problems: list[str]) -> dict[str, Any]:
    component = state.components.get(name)
    entry: dict[str, Any] = {"ok": not problems}
    if component is not None and component.heard_at is not None:
        entry["state"] = text(component.body.get("state"))
        entry["age_s"] = round(now - component.heard_at, 3)
    child = state.children.get(name)
    if child is not None:  # JSON refuses NaN: only checked strings and numbers go out
        entry["process"] = text(child.get("state"))
        restarts = count(child.get("restarts"))
        entry["restarts"] = int(restarts) if restarts is not None else None
    if problems:
        entry["problems"] = problems
    return entry
