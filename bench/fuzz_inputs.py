"""Bad input never crashes and never slips through: a seeded fuzz run over every input kind.

For each input kind (policy, observation, trace, inventory, capacity model) this makes
thousands of inputs from a valid seed file: the known-bad changes of
``senex_scale.testing_inputs`` (the catalogue the property tests in ``tests/unit/inputs`` check
one by one: a value of the wrong type, a number in quotes, NaN and infinities, out-of-range
numbers and times, unknown keys and enum values, broken references, text with newlines or
punctuation where a config file will hold it) and random structural ones (deep nesting, bytes
that are not UTF-8, a directory instead of a file, truncation), plus a few known-good variants
(a byte-order mark, a policy of action rules only). Each input goes through the real command
line in this process (``testing_inputs.invoke``) and is classified:

- ``rejected``: exit 2, one ``Error:`` line naming the file (and a path or line), ending with
  a newline, no Python class names in it, nothing written;
- ``accepted``: exit 0 for an input that is valid (or may be);
- ``traceback``: an exception escaped;
- ``wrong-code``: any other exit code (1 for bad input is wrong: it says "the work failed");
- ``accepted-invalid``: exit 0 for an input that is known to be bad;
- ``bad-message``: exit 2, but the message leaks internals or names no file (for a known-bad
  change: not the path it broke);
- ``wrote``: render changed its output directory although it failed.

Goal: 0 tracebacks, 0 wrong codes, 0 accepted-invalid, 0 bad messages.

Run: .venv/bin/python bench/fuzz_inputs.py [--count 2000] [--seed 1] [--kind policy] [-v]
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from senex_scale.testing_inputs import (
    ACTION_ONLY_POLICY,
    INVENTORY_BAD,
    MODEL,
    MODEL_BAD,
    NOW,
    OBSERVATION_BAD,
    POLICY,
    POLICY_BAD,
    SECRETS,
    TRACE_BAD_CELLS,
    TRACE_BAD_TIMES,
    Bad,
    deep,
    get_path,
    inventory_seed,
    invoke,
    leaves,
    message_problem,
    model_seed,
    observation_seed,
    policy_seed,
    quoted,
    set_path,
    tables,
    to_json,
    to_toml,
    trace_seed,
    wrong_type,
)

# --------------------------------------------------------------------------- cases


@dataclass
class Case:
    """One input: its files, the command line and what must happen."""

    kind: str
    label: str
    files: dict[str, bytes | None]  # None: make a directory of that name
    argv: list[str]
    expect: str  # "invalid": exit 2; "valid": exit 0; "any": 0 or 2
    out_dir: bool = False
    where: str = ""  # a known-bad change: the path its message must name


Dump = Callable[[dict[str, Any]], bytes]


def _generic(rng: random.Random, data: dict[str, Any], dump: Dump) -> tuple[str, bytes, str]:
    """A structural mutation of ``data``: (label, bytes, expectation)."""
    choice = rng.randrange(10)
    data = copy.deepcopy(data)
    found = [(p, v) for p, v in leaves(data) if p]
    if choice == 0:
        path, value = rng.choice(found)
        set_path(data, path, wrong_type(rng, value))
        return f"wrong type at {path}", dump(data), "invalid"
    if choice == 1:
        numeric = [
            (p, v) for p, v in found if isinstance(v, float | int) and not isinstance(v, bool)
        ]
        if numeric:
            path, _ = rng.choice(numeric)
            bad = rng.choice([math.nan, math.inf, -math.inf])
            set_path(data, path, bad)
            return f"{bad} at {path}", dump(data), "invalid"
    if choice == 2:
        table = rng.choice(list(tables(data)))
        get_path(data, table)["zzunknown" + str(rng.randrange(100))] = 1
        return f"unknown key in {table}", dump(data), "invalid"
    if choice == 3:
        depth = rng.choice([50, 500, 5000, 100000])
        return f"nested {depth}", deep("json" if dump is to_json else "toml", depth), "invalid"
    if choice == 4:
        text = dump(data)
        cut = rng.randrange(len(text))
        return f"truncated at {cut}", text[:cut], "any"
    if choice == 5:
        text = bytearray(dump(data))
        pos = rng.randrange(len(text))
        text[pos : pos + 1] = rng.choice([b"\xff", b"\xc3\x28", b"\x00", b"\x80\x80"])
        return f"bad bytes at {pos}", bytes(text), "any"
    if choice == 6:
        return "bom", b"\xef\xbb\xbf" + dump(data), "valid"
    if choice == 7:
        return "empty", rng.choice([b"", b"\n", b"   "]), "invalid"
    if choice == 8:
        numbers = [(p, quoted(v)) for p, v in found if quoted(v) is not None]
        if numbers:
            path, text = rng.choice(numbers)
            set_path(data, path, text)
            return f"quoted {text!r} at {path}", dump(data), "invalid"
    return "garbage", bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))), "any"


def _known_bad(
    rng: random.Random, catalogue: tuple[Bad, ...], seed: dict[str, Any], dump: Dump
) -> tuple[str, bytes, str, str]:
    bad = rng.choice(catalogue)
    return bad.label, dump(bad.apply(seed)), "invalid", bad.where


def policy_cases(rng: random.Random, count: int) -> Iterator[Case]:
    seed = policy_seed()
    argv = ["validate", "{p.toml}"]
    for _ in range(count):
        roll = rng.random()
        where = ""
        if roll < 0.55:
            label, body, expect, where = _known_bad(rng, POLICY_BAD, seed, to_toml)
        elif roll < 0.57:
            label, body, expect = "valid", to_toml(seed), "valid"
        elif roll < 0.58:
            label, body, expect = "action rules only", ACTION_ONLY_POLICY.encode(), "valid"
        elif roll < 0.59:
            label, expect = "nothing to do", "invalid"
            body = rng.choice([b'[controller]\ninterval = "15s"\n', b"pools = {}\n"])
        elif roll < 0.6:
            yield Case("policy", "directory", {"p.toml": None}, argv, "invalid")
            continue
        else:
            label, body, expect = _generic(rng, seed, to_toml)
        yield Case("policy", label, {"p.toml": body}, argv, expect, where=where)


def observation_cases(rng: random.Random, count: int) -> Iterator[Case]:
    seed = observation_seed()
    policy = POLICY.encode()
    argv = ["plan", "--observe", "{obs.json}", "--policy", "{p.toml}", "--json"]
    for _ in range(count):
        roll = rng.random()
        where = ""
        if roll < 0.55:
            label, body, expect, where = _known_bad(rng, OBSERVATION_BAD, seed, to_json)
        elif roll < 0.58:
            label, body, expect = "valid", to_json(seed), "valid"
        elif roll < 0.6:
            files: dict[str, bytes | None] = {"obs.json": None, "p.toml": policy}
            yield Case("observation", "directory", files, argv, "invalid")
            continue
        elif roll < 0.63:
            body = rng.choice([b"null", b"[]", b"5", b'"x"', b"true", b"{}"])
            expect = "valid" if body == b"{}" else "invalid"
            label = f"top level {body!r}"
        else:
            label, body, expect = _generic(rng, seed, to_json)
            if label == "bom":
                expect = "any"
        files = {"obs.json": body, "p.toml": policy}
        yield Case("observation", label, files, argv, expect, where=where)


def trace_cases(rng: random.Random, count: int) -> Iterator[Case]:
    argv = ["simulate", "--trace", "{t.csv}", "--policy", "{p.toml}", "--compare", "none", "-q"]
    policy = POLICY.encode()
    for _ in range(count):
        rows = trace_seed(rng.choice([3, 10, 40])).splitlines()
        header = 1
        roll = rng.random()
        expect = "invalid"
        if roll < 0.5:
            line = rng.randrange(header + 1, len(rows))
            cells = rows[line].split(",")
            col = rng.randrange(len(cells))
            far = ("1e11", "4e9")  # years 5138 and 2096: out of order mid-trace
            bad = rng.choice(TRACE_BAD_CELLS + (TRACE_BAD_TIMES + far if col == 0 else ()))
            cells[col] = bad
            rows[line] = ",".join(cells)
            label = f"line {line + 1} col {col}: {bad!r}"
        elif roll < 0.55:
            rows = rows[: header + 2]
            rows[-1] = (
                rows[-1].split(",", 1)[0].replace(rows[-1].split(",", 1)[0], f"{NOW + 1:.0f}")
                + ","
                + rows[-1].split(",", 1)[1]
            )
            label = "two rows 1 s apart"
            expect = "any"
        elif roll < 0.6:
            rows = rows[: header + 2]
            label = "one row"
            expect = "any"
        elif roll < 0.65:
            rows[header] = rng.choice(
                [
                    "time,http_rps",
                    "timestamp,timestamp,http_rps",
                    "timestamp",
                    "timestamp,,http_rps",
                    "timestamp,http_rps,ws_connections",
                    "timestamp,bogus",
                ]
            )
            label = f"header {rows[header]!r}"
        elif roll < 0.7:
            rows[0] = rng.choice(["# timezone: Mars/Base", "# timezone: "])
            label = f"zone {rows[0]!r}"
            expect = "invalid" if "Mars" in rows[0] else "any"
        elif roll < 0.75:
            line = rng.randrange(header + 2, len(rows))
            rows[line], rows[line - 1] = rows[line - 1], rows[line]
            label = "rows swapped"
        elif roll < 0.8:
            line = rng.randrange(header + 1, len(rows))
            rows[line] = rows[line].rsplit(",", 1)[0] if rng.random() < 0.5 else rows[line] + ",1"
            label = "field count"
        elif roll < 0.83:
            label, expect = "valid", "valid"
        elif roll < 0.85:
            files: dict[str, bytes | None] = {"t.csv": None, "p.toml": policy}
            yield Case("trace", "directory", files, argv, "invalid")
            continue
        elif roll < 0.88:
            rows[header] += ",extra"
            for j in range(header + 1, len(rows)):
                rows[j] += ",1"
            label, expect = "unknown column", "valid"
        else:
            text = ("\n".join(rows) + "\n").encode()
            choice = rng.randrange(4)
            if choice == 0:
                body, label, expect = b"\xef\xbb\xbf" + text, "bom", "valid"
            elif choice == 1:
                cut = rng.randrange(len(text))
                body, label, expect = text[:cut], f"truncated {cut}", "any"
            elif choice == 2:
                pos = rng.randrange(len(text))
                body = text[:pos] + b"\xff" + text[pos + 1 :]
                label, expect = "bad bytes", "invalid"
            else:
                body, label, expect = b"", "empty", "invalid"
            yield Case("trace", label, {"t.csv": body, "p.toml": policy}, argv, expect)
            continue
        body = ("\n".join(rows) + "\n").encode()
        yield Case("trace", label, {"t.csv": body, "p.toml": policy}, argv, expect)


def inventory_cases(rng: random.Random, count: int) -> Iterator[Case]:
    seed = inventory_seed()
    argv = ["render", "--inventory", "{inv.toml}", "--out", "{out}"]
    for _ in range(count):
        roll = rng.random()
        where = ""
        if roll < 0.6:
            label, body, expect, where = _known_bad(rng, INVENTORY_BAD, seed, to_toml)
        elif roll < 0.61:
            label, body, expect = "valid", to_toml(seed), "valid"
        elif roll < 0.62:
            yield Case("inventory", "directory", {"inv.toml": None}, argv, "invalid", True)
            continue
        else:
            label, body, expect = _generic(rng, seed, to_toml)
        yield Case("inventory", label, {"inv.toml": body}, argv, expect, True, where)


def model_cases(rng: random.Random, count: int) -> Iterator[Case]:
    seed = model_seed()
    files: dict[str, bytes | None] = {"p.toml": POLICY.encode(), "t.csv": trace_seed(10).encode()}
    argv = ["simulate", "--trace", "{t.csv}", "--policy", "{p.toml}", "--model", "{m.toml}"]
    argv += ["--compare", "none", "-q"]
    for _ in range(count):
        roll = rng.random()
        where = ""
        if roll < 0.55:
            label, body, expect, where = _known_bad(rng, MODEL_BAD, seed, to_toml)
        elif roll < 0.58:
            label, body, expect = "valid", MODEL.encode(), "valid"
        elif roll < 0.6:
            yield Case("model", "directory", {**files, "m.toml": None}, argv, "invalid")
            continue
        else:
            label, body, expect = _generic(rng, seed, to_toml)
            if label == "empty":
                expect = "valid"  # an empty model: every pool gets the defaults
        yield Case("model", label, {**files, "m.toml": body}, argv, expect, where=where)


FILES = {
    "policy": "p.toml",
    "observation": "obs.json",
    "trace": "t.csv",
    "inventory": "inv.toml",
    "model": "m.toml",
}
"""The file each kind's cases break: every refusal names it."""

KINDS: dict[str, Callable[[random.Random, int], Iterator[Case]]] = {
    "policy": policy_cases,
    "observation": observation_cases,
    "trace": trace_cases,
    "inventory": inventory_cases,
    "model": model_cases,
}


# --------------------------------------------------------------------------- running


@dataclass
class Outcome:
    name: str
    code: int | None
    stderr: str
    detail: str = ""
    case: Case | None = field(default=None, repr=False)


def _tree(path: Path) -> dict[str, bytes]:
    if not path.exists():
        return {}
    return {
        str(p.relative_to(path)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(path.rglob("*"))
    }


def run_case(case: Case, work: Path) -> Outcome:
    paths: dict[str, str] = {}
    for name, body in case.files.items():
        path = work / name
        if body is None:
            path.mkdir()
        else:
            path.write_bytes(body)
        paths[name] = str(path)
    out = work / "out"
    if case.out_dir:  # a new directory: render must not make it when it fails
        paths["out"] = str(out)
    before = _tree(out)
    argv = [paths.get(a[1:-1], a) if a.startswith("{") else a for a in case.argv]
    result = invoke(argv)
    code, stderr, escaped = result.code, result.stderr, result.escaped
    if escaped is not None:
        return Outcome(
            "traceback", None, stderr, f"{type(escaped).__name__}: {escaped}"[:300], case
        )
    if case.out_dir and code != 0 and _tree(out) != before:
        return Outcome("wrote", code, stderr, "", case)
    if code == 0:
        if case.expect == "invalid":
            return Outcome("accepted-invalid", code, stderr, "", case)
        return Outcome("accepted", code, stderr, "", case)
    if code != 2:
        return Outcome("wrong-code", code, stderr, "", case)
    if case.expect == "valid":
        return Outcome("rejected-valid", code, stderr, "", case)
    names = [FILES[case.kind], case.where] if case.where else [FILES[case.kind]]
    problem = message_problem(stderr, names)
    if problem:
        return Outcome("bad-message", code, stderr, problem, case)
    return Outcome("rejected", code, stderr, "", case)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=2000, help="inputs per kind")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kind", choices=sorted(KINDS), action="append")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args()
    os.environ.update(SECRETS)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))
    total_bad = 0
    for kind in args.kind or list(KINDS):
        rng = random.Random(f"{args.seed}-{kind}")
        counts: Counter[str] = Counter()
        examples: dict[str, list[Outcome]] = {}
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            for n, case in enumerate(KINDS[kind](rng, args.count)):
                work = Path(tmp) / str(n)
                work.mkdir()
                outcome = run_case(case, work)
                counts[outcome.name] += 1
                examples.setdefault(outcome.name, []).append(outcome)
        elapsed = time.perf_counter() - start
        shown = ", ".join(f"{name} {counts[name]}" for name in sorted(counts))
        print(f"{kind:12} {sum(counts.values()):5} inputs in {elapsed:5.1f} s: {shown}")
        for name in (
            "traceback",
            "wrong-code",
            "accepted-invalid",
            "bad-message",
            "wrote",
            "rejected-valid",
        ):
            total_bad += counts[name]
            if not args.verbose:
                continue
            seen: set[str] = set()
            for outcome in examples.get(name, []):
                assert outcome.case is not None
                key = outcome.case.label.split(" = ")[0] + outcome.detail[:40]
                if key in seen and args.verbose < 2:
                    continue
                seen.add(key)
                message = outcome.stderr.strip().replace("\n", " | ")[:300]
                print(f"   {name}: {outcome.case.label[:120]} -> {outcome.detail} {message}")
    sys.exit(1 if total_bad else 0)


if __name__ == "__main__":
    main()
