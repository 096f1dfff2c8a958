"""Fault injection: kill, interrupt, fill the disk, corrupt the files and feed bad input; count what was lost.

    python benchmarks/fault_injection.py --out benchmarks/results/fault_injection.md

Training faults run real `smose train` processes on one small Hopper-v5 configuration (MuJoCo, so checkpoints fall
mid-episode) and every damaged run is finished with `smose train --resume` and compared with an uninterrupted
reference run: the checkpoint tensors (networks, Adam moments, replay buffer, RNG and env state) bit for bit, and
metrics.csv row for row (except the wall-clock SPS column).

- SIGKILL: --kills kills, each a uniformly random time (0 to 2 checkpoint intervals, by the reference run's speed)
  after the process has started training; a process killed before its run's first checkpoint restarts with --force.
  "Steps redone" is the last step the process was seen at (progress bar, metrics.csv) minus the checkpoint step
  it resumes from: a lower bound of the work lost (the progress bar moves every 100 steps).
- SIGINT: --sigints interrupts at random times; each must exit with code 130, a checkpoint at the step it names
  and the resume command.
- Full disk (real): the run directory on a tmpfs too small for the growing checkpoints (needs root for `mount`);
  after the failure the tmpfs is enlarged and the run resumed.
- Full disk (simulated): ENOSPC raised at a random byte of a random file during a checkpoint (--enospc trials).
- Corrupt files: every file a loader reads, damaged by bit flips, truncation and JSON field tampering
  (--corruptions per file and kind; tampered files get a recomputed content hash, as a deliberate tamperer would
  do), then read by every loader: refused with a one-line SmoseError, accepted
  (harmless damage, e.g. a JSON field no loader uses), or escaped (any other exception: a bug).
- Bad input: invalid command lines; each must exit with code 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import errno
import io
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from record import header
from smose import serialization
from smose.cli import main
from smose.errors import SmoseError
from smose.serialization import load_model, read_eval
from smose.training.checkpoint import CHECKPOINT_DIR, CHECKPOINT_JSON
from smose.training.trainer import Trainer

CONFIG = dict(env="Hopper-v5", steps=3000, learning_starts=500, batch_size=64, experts=4, eval_every=1000,
              eval_episodes=2, buffer_size=3000, checkpoint_every=250, seed=0)
CONFIG_ARGS = [a for k, v in CONFIG.items() for a in ("--" + k.replace("_", "-"), str(v))]


# ---- processes -------------------------------------------------------------------------------------------------------
class TrainProcess:
    """A `smose train` subprocess whose progress bar (stderr) is read on a thread to know how far it got."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "smose", "train", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self.err = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while chunk := self.proc.stderr.read(1):
            self.err += chunk

    def seen_step(self) -> int | None:
        found = re.findall(rf"(\d+)/{CONFIG['steps']}", self.err)
        return int(found[-1]) if found else None

    def wait_started(self, timeout: float = 300) -> bool:
        deadline = time.monotonic() + timeout
        while self.seen_step() is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def finish(self, timeout: float = 900) -> tuple[int, str, str]:
        out, _ = self.proc.communicate(timeout=timeout)
        self._reader.join()
        return self.proc.returncode, out, self.err


def checkpoint_step(run_dir: Path) -> int | None:
    path = run_dir / CHECKPOINT_DIR / CHECKPOINT_JSON
    return json.loads(path.read_text())["step"] if path.is_file() else None


def last_metrics_step(run_dir: Path) -> int:
    try:
        with open(run_dir / "metrics.csv", newline="") as fh:
            return max((int(row["step"]) for row in csv.DictReader(fh) if row.get("step", "").isdigit()), default=0)
    except OSError:
        return 0


def start(run_dir: Path) -> TrainProcess:
    """Continue the run if it has a checkpoint, else (re)start it from scratch."""
    if checkpoint_step(run_dir) is None:
        return TrainProcess(*CONFIG_ARGS, "--out", str(run_dir), "--force")
    return TrainProcess("--resume", str(run_dir))


def run_to_completion(run_dir: Path) -> None:
    path = run_dir / CHECKPOINT_DIR / CHECKPOINT_JSON
    if path.is_file() and json.loads(path.read_text())["finished"]:
        return
    code, _, err = start(run_dir).finish()
    if code != 0:
        raise RuntimeError(f"resume of {run_dir} failed: {err[-500:]}")


def compare_with_reference(reference: Path, run_dir: Path) -> str:
    """"identical" or what differs between the two finished runs."""
    def state(run: Path) -> tuple[dict, dict, list]:
        meta = json.loads((run / CHECKPOINT_DIR / CHECKPOINT_JSON).read_text())
        tensors = load_file(str(run / CHECKPOINT_DIR / meta["tensor_file"]))
        with open(run / "metrics.csv", newline="") as fh:
            rows = [{k: v for k, v in r.items() if k != "sps"} for r in csv.DictReader(fh)]
        return meta, tensors, rows

    (_, ta, rows_a), (meta_b, tb, rows_b) = state(reference), state(run_dir)
    problems = []
    if not meta_b["finished"] or meta_b["step"] != CONFIG["steps"]:
        problems.append(f"stopped at {meta_b['step']}")
    different = [k for k in ta if k not in tb or not torch.equal(ta[k], tb[k])]
    if different:
        problems.append(f"{len(different)} tensors differ ({', '.join(different[:3])})")
    if rows_a != rows_b:
        problems.append(f"metrics differ ({len(rows_a)} vs {len(rows_b)} rows)")
    keys = [(r["step"], r["event"]) for r in rows_b]
    if len(keys) != len(set(keys)):
        problems.append("duplicate metrics rows")
    return "; ".join(problems) or "identical"


# ---- training faults -----------------------------------------------------------------------------------------------
def reference_run(work: Path) -> tuple[Path, float]:
    """The uninterrupted run; returns it and the wall time of one checkpoint interval."""
    run_dir = work / "reference"
    proc = TrainProcess(*CONFIG_ARGS, "--out", str(run_dir))
    proc.wait_started()
    began = time.monotonic()
    code, _, err = proc.finish()
    if code != 0:
        raise RuntimeError(f"reference run failed: {err[-500:]}")
    interval = (time.monotonic() - began) * CONFIG["checkpoint_every"] / CONFIG["steps"]
    return run_dir, interval


def sigkill_chain(work: Path, reference: Path, kills: int, interval: float, rng: random.Random) -> dict:
    """Kill runs at random times until ``kills`` kills happened; a run that finishes first is compared and the
    next kills go to a new run."""
    records, results, runs = [], [], 0
    run_dir = work / "killed-0"
    while len(records) < kills:
        proc = start(run_dir)
        if not proc.wait_started():
            raise RuntimeError(f"process did not start: {proc.finish()[2][-500:]}")
        delay = rng.uniform(0.0, 2 * interval)
        time.sleep(delay)
        if proc.proc.poll() is not None:  # finished before the kill: check it and continue on a new run
            proc.finish()
            results.append(compare_with_reference(reference, run_dir))
            runs += 1
            run_dir = work / f"killed-{runs}"
            continue
        seen_bar = proc.seen_step() or 0
        proc.proc.kill()
        proc.finish()
        seen = max(seen_bar, last_metrics_step(run_dir))
        resumed_from = checkpoint_step(run_dir) or 0
        records.append({"run": runs, "delay": delay, "seen": seen, "checkpoint": resumed_from,
                        "redone": max(0, seen - resumed_from)})
    run_to_completion(run_dir)
    results.append(compare_with_reference(reference, run_dir))
    summary = "identical" if set(results) == {"identical"} else "; ".join(results)
    return {"records": records, "result": f"{summary} ({len(results)} run{'s' if len(results) > 1 else ''})"}


def sigint_chain(work: Path, reference: Path, sigints: int, interval: float, rng: random.Random) -> dict:
    run_dir = work / "interrupted"
    records = []
    while len(records) < sigints:
        proc = start(run_dir)
        proc.wait_started()
        time.sleep(rng.uniform(0.0, 2 * interval))
        if proc.proc.poll() is not None:  # finished first: the chain ends with fewer interrupts
            proc.finish()
            break
        proc.proc.send_signal(signal.SIGINT)
        code, _, err = proc.finish()
        named = re.search(r"at step (\d+) of", err)
        saved = checkpoint_step(run_dir)
        records.append({"code": code, "named": int(named.group(1)) if named else None, "checkpoint": saved,
                        "message": f"--resume {run_dir}" in err,
                        "ok": code == 130 and named is not None and saved == int(named.group(1))
                        and f"--resume {run_dir}" in err})
    run_to_completion(run_dir)
    return {"records": records, "result": compare_with_reference(reference, run_dir)}


def real_disk_full(work: Path, reference: Path) -> dict:
    """The run on a 1.5 MB tmpfs: the checkpoints outgrow it; then 64 MB more space and a resume."""
    mount_point = work / "tmpfs"
    mount_point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(mount_point)],
                      capture_output=True).returncode != 0:
        return {"skipped": "mounting a tmpfs needs root"}
    try:
        run_dir = mount_point / "run"
        code, _, err = TrainProcess(*CONFIG_ARGS, "--out", str(run_dir), "--quiet").finish()
        message = err.strip().splitlines()[-1] if err.strip() else ""
        kept = checkpoint_step(run_dir)
        Trainer.resume(run_dir).close()  # the surviving checkpoint must load
        subprocess.run(["mount", "-o", "remount,size=64m", str(mount_point)], check=True)
        run_to_completion(run_dir)
        result = compare_with_reference(reference, run_dir)
        leftovers = [p.name for p in (run_dir / CHECKPOINT_DIR).iterdir() if p.name.endswith(".tmp")]
        return {"code": code, "message": message, "kept": kept, "result": result, "leftovers": leftovers}
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def simulated_enospc(work: Path, reference: Path, trials: int, rng: random.Random) -> dict:
    """ENOSPC at a random byte of a random checkpoint-time write, in-process; the old checkpoint must survive."""
    base = work / "enospc-base"
    shutil.copytree(reference, base)
    meta = json.loads((base / CHECKPOINT_DIR / CHECKPOINT_JSON).read_text())
    sizes = {".model.safetensors.tmp": (base / "model.safetensors").stat().st_size,
             ".step-": (base / CHECKPOINT_DIR / meta["tensor_file"]).stat().st_size,
             f".{CHECKPOINT_JSON}.tmp": (base / CHECKPOINT_DIR / CHECKPOINT_JSON).stat().st_size}
    outcomes = {"refused, old checkpoint intact": 0, "other": 0}
    failures = []
    for trial in range(trials):
        run_dir = work / f"enospc-{trial}"
        shutil.copytree(base, run_dir)
        target = rng.choice(sorted(sizes))
        budget = rng.randrange(0, sizes[target])  # the disk fills up somewhere inside this file
        written = {"bytes": 0}
        real_write = serialization._write_all

        def write(fh, data, target=target, budget=budget, written=written, real_write=real_write):
            if Path(fh.name).name.startswith(target):
                room = budget - written["bytes"]
                if room < len(data):
                    real_write(fh, bytes(memoryview(data)[: max(room, 0)]))
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                written["bytes"] += len(data)
            real_write(fh, data)

        serialization._write_all = write
        try:
            trainer = Trainer.resume(run_dir, steps=CONFIG["steps"] + 10)
            try:
                trainer.checkpoint()
                error = None
            except SmoseError as exc:
                error = str(exc)
            finally:
                trainer.close()
        finally:
            serialization._write_all = real_write
        after = json.loads((run_dir / CHECKPOINT_DIR / CHECKPOINT_JSON).read_text())
        clean = not [p for p in run_dir.rglob("*.tmp")]
        try:
            Trainer.resume(run_dir, steps=CONFIG["steps"] + 10).close()
            loads = True
        except SmoseError:
            loads = False
        if error and "No space left" in error and after == meta and clean and loads:
            outcomes["refused, old checkpoint intact"] += 1
        elif error is None and loads and clean:  # the budget was large enough: the write succeeded
            outcomes.setdefault("fitted, new checkpoint complete", 0)
            outcomes["fitted, new checkpoint complete"] += 1
        else:
            outcomes["other"] += 1
            failures.append(f"{target} after {budget} bytes: {error}")
        shutil.rmtree(run_dir)
    return {"outcomes": outcomes, "failures": failures}


# ---- corrupt files and bad input ------------------------------------------------------------------------------------
def read_everything(run_dir: Path) -> str:
    """Run every loader on ``run_dir``: "refused", "accepted" or "escaped: <exception>"."""
    refused = False
    loaders = [lambda: load_model(run_dir), lambda: read_eval(run_dir / "eval.json"),
               lambda: Trainer.resume(run_dir, steps=CONFIG["steps"] + 10).close()]
    for loader in loaders:
        try:
            loader()
        except SmoseError as exc:
            if "\n" in str(exc):
                return "escaped: multi-line message"
            refused = True
        except Exception as exc:  # noqa: BLE001 - counting escapes is the point
            return f"escaped: {type(exc).__name__}: {exc}"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            code = main(["info", str(run_dir)])
        except Exception as exc:  # noqa: BLE001
            return f"escaped: info: {type(exc).__name__}: {exc}"
    return "refused" if refused or code == 2 else "accepted"


def damage(kind: str, raw: bytes, rng: random.Random) -> bytes:
    if kind == "bit flips":
        buf = bytearray(raw)
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(len(buf))] ^= rng.randint(1, 255)
        return bytes(buf)
    if kind == "truncation":
        return raw[: rng.randrange(len(raw))]
    doc = json.loads(raw)  # JSON field tampering: one value replaced by a random one, or removed
    parent, key = doc, None
    while True:
        keys = list(parent) if isinstance(parent, dict) else list(range(len(parent)))
        if not keys:
            break
        key = rng.choice(keys)
        if not isinstance(parent[key], (dict, list)) or rng.random() < 0.4:
            break
        parent = parent[key]
    if key is None:
        return b"{}"
    if isinstance(parent, dict) and rng.random() < 0.2:
        del parent[key]
    else:
        parent[key] = rng.choice([None, True, -1, 0, 2 ** 64, 1e308, float("nan"), "", "x" * 50, [], {}, [1, 2],
                                  {"a": 1}, rng.randint(-10 ** 6, 10 ** 6), rng.uniform(-1e3, 1e3)])
    # Re-sealed like a deliberate tamperer would, so that the checks behind the content hash are exercised.
    return json.dumps(serialization.seal(doc) if "content_sha256" in doc else doc).encode()


def corrupt_files(work: Path, reference: Path, per_kind: int, rng: random.Random) -> list[dict]:
    base = work / "corrupt-base"
    shutil.copytree(reference, base, ignore=shutil.ignore_patterns("tensorboard"))
    files = sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())
    rows = []
    for name in files:
        kinds = ["bit flips", "truncation"] + (["JSON field tampering"] if name.endswith(".json") else [])
        for kind in kinds:
            counts = {"refused": 0, "accepted": 0, "escaped": 0}
            escapes = []
            for _ in range(per_kind):
                run_dir = work / "corrupt"
                shutil.copytree(base, run_dir)
                path = run_dir / name
                path.write_bytes(damage(kind, path.read_bytes(), rng))
                outcome = read_everything(run_dir)
                counts[outcome.split(":")[0]] += 1
                if outcome.startswith("escaped"):
                    escapes.append(outcome)
                shutil.rmtree(run_dir)
            label = re.sub(r"step-\d+-[0-9a-f]+", "step-*", name)
            rows.append({"file": label, "kind": kind, **counts, "escapes": escapes[:3]})
    return rows


def bad_inputs(work: Path, reference: Path) -> list[dict]:
    (work / "not-a-dir").write_text("")
    hopper_on_walker = ["eval", str(reference), "--env", "Walker2d-v5", "--episodes", "1"]
    cases = [
        ["train", "--env", "Hoper-v5"], ["train", "--env", "CartPole-v1"], ["train", "--steps", "0"],
        ["train", "--experts", "-1"], ["train", "--seed", "-1"], ["train", "--lb-weight", "nan"],
        ["train", "--buffer-size", "1000000000000", "--env", "Pendulum-v1", "--out", str(work / "huge")],
        ["train", "--out", str(work / "not-a-dir" / "run")], ["train", "--out", str(reference)],
        ["train", "--resume", str(work / "missing")], ["train", "--resume", str(reference)],
        ["train", "--resume", str(reference), "--batch-size", "32"], hopper_on_walker,
        ["eval", str(work / "missing")], ["info", str(work)],
        ["eval", str(reference), "--episodes", "0"], ["distill", str(reference), "--depth", "0"],
    ]
    rows = []
    for args in cases:
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            try:
                code = main(args)
            except SystemExit as exc:  # argparse: usage line + error line
                code = exc.code
        lines = err.getvalue().strip().splitlines()
        rows.append({"args": shlex.join(a.replace(str(work), "WORK") for a in args), "code": code,
                     "message": lines[-1].replace(str(work), "WORK") if lines else "", "lines": len(lines)})
    return rows


# ---- report --------------------------------------------------------------------------------------------------------
def report(note: str, results: dict, started: float) -> str:
    kill, sigint, full, enospc = results["sigkill"], results["sigint"], results["disk_full"], results["enospc"]
    redone = [r["redone"] for r in kill["records"]]
    head = header("fault_injection.py", note)
    lines = [
        "# Fault injection",
        "",
        f"Command: `{head['command']}`  ",
        f"Date: {head['date']} {head['time']}; machine: {head['machine']}; smose {head['smose']}, torch "
        f"{torch.__version__}, Python {platform.python_version()}; took {time.monotonic() - started:.0f} s; "
        f"1-min load average at the end {os.getloadavg()[0]:.1f}. {head['note']}".rstrip() + "  ",
        f"Training configuration: `smose train {shlex.join(CONFIG_ARGS)}`; one checkpoint interval = "
        f"{CONFIG['checkpoint_every']} steps ({results['interval']:.1f} s here).",
        "",
        "| fault | tried | outcome | lost |",
        "|---|---:|---|---|",
        f"| SIGKILL at random times | {len(kill['records'])} | run finished; vs uninterrupted: {kill['result']} | "
        f"steps redone per kill: max {max(redone, default=0)}, mean {sum(redone) / max(len(redone), 1):.0f} "
        f"(bound: {CONFIG['checkpoint_every']}) |",
        f"| SIGINT at random times | {len(sigint['records'])} | exit 130, checkpoint at the named step, resume "
        f"command shown: {sum(r['ok'] for r in sigint['records'])}/{len(sigint['records'])}; vs uninterrupted: "
        f"{sigint['result']} | nothing |",
    ]
    if "skipped" in full:
        lines.append(f"| disk full (real tmpfs) | 0 | skipped: {full['skipped']} | |")
    else:
        lines.append(f"| disk full (real 1.5 MB tmpfs) | 1 | exit {full['code']}, checkpoint of step {full['kept']} "
                     f"loads, no temporary files left ({len(full['leftovers'])}); after more space and a resume vs "
                     f"uninterrupted: {full['result']} | steps since step {full['kept']} |")
    lines.append(f"| disk full (ENOSPC at a random byte of a checkpoint write) | {sum(enospc['outcomes'].values())} | "
                 + ", ".join(f"{k}: {v}" for k, v in enospc["outcomes"].items()) + " | nothing (the write is retried "
                 "at the next resume) |")
    corrupt = results["corrupt"]
    for kind in ("bit flips", "truncation", "JSON field tampering"):
        rows = [r for r in corrupt if r["kind"] == kind]
        tried = sum(r["refused"] + r["accepted"] + r["escaped"] for r in rows)
        lines.append(f"| corrupt files: {kind} ({len(rows)} files) | {tried} | refused "
                     f"{sum(r['refused'] for r in rows)}, harmless {sum(r['accepted'] for r in rows)}, escaped "
                     f"{sum(r['escaped'] for r in rows)} | the damaged file |")
    bad = results["bad_inputs"]
    ok = sum(r["code"] == 2 and (r["lines"] == 1 or r["message"].startswith("smose ")) for r in bad)
    lines += [f"| bad command lines | {len(bad)} | exit 2 with a one-line message (argparse: usage + one line): "
              f"{ok}/{len(bad)} | nothing |", ""]

    lines += ["## SIGKILL", "", "| kill | run | delay after start of training (s) | last step seen | resumed from | "
              "steps redone |", "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {i + 1} | {r['run']} | {r['delay']:.2f} | {r['seen']} | {r['checkpoint']} | {r['redone']} |"
              for i, r in enumerate(kill["records"])]
    lines += ["", "## SIGINT", "", "| interrupt | exit code | step named | checkpoint step | resume command |",
              "|---:|---:|---:|---:|---|"]
    lines += [f"| {i + 1} | {r['code']} | {r['named']} | {r['checkpoint']} | {'yes' if r['message'] else 'no'} |"
              for i, r in enumerate(sigint["records"])]
    if "skipped" not in full:
        lines += ["", "## Disk full (real)", "", f"Message: `{full['message']}`"]
    if enospc["failures"]:
        lines += ["", "Simulated ENOSPC failures:", *[f"- {f}" for f in enospc["failures"]]]
    lines += ["", "## Corrupt files", "", "| file | damage | refused | harmless | escaped |",
              "|---|---|---:|---:|---:|"]
    lines += [f"| {r['file']} | {r['kind']} | {r['refused']} | {r['accepted']} | {r['escaped']} |" for r in corrupt]
    escapes = [e for r in corrupt for e in r["escapes"]]
    if escapes:
        lines += ["", "Escapes:", *[f"- {e}" for e in escapes]]
    lines += ["", "## Bad command lines", "", "| command | exit | message |", "|---|---:|---|"]
    lines += [f"| `smose {r['args']}` | {r['code']} | {r['message']} |" for r in bad]
    return "\n".join(lines) + "\n"


def main_benchmark() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--sigints", type=int, default=3)
    parser.add_argument("--enospc", type=int, default=20)
    parser.add_argument("--corruptions", type=int, default=30, help="damaged copies per file and kind of damage")
    parser.add_argument("--seed", type=int, default=None, help="random kill times etc. (default: fresh)")
    parser.add_argument("--note", default="", help="what else ran on the machine, for the report")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown report here too")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    started = time.monotonic()
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="smose-faults-") as tmp:
        work = Path(tmp)
        os.chdir(work)  # MuJoCo writes MUJOCO_LOG.TXT into the working directory
        reference, results["interval"] = reference_run(work)
        print(f"reference run done; checkpoint interval {results['interval']:.1f} s", flush=True)
        results["sigkill"] = sigkill_chain(work, reference, args.kills, results["interval"], rng)
        print(f"SIGKILL x{len(results['sigkill']['records'])}: {results['sigkill']['result']}", flush=True)
        results["sigint"] = sigint_chain(work, reference, args.sigints, results["interval"], rng)
        print(f"SIGINT x{len(results['sigint']['records'])}: {results['sigint']['result']}", flush=True)
        results["disk_full"] = real_disk_full(work, reference)
        print(f"disk full: {results['disk_full']}", flush=True)
        results["enospc"] = simulated_enospc(work, reference, args.enospc, rng)
        print(f"simulated ENOSPC: {results['enospc']['outcomes']}", flush=True)
        results["corrupt"] = corrupt_files(work, reference, args.corruptions, rng)
        print("corrupt files done", flush=True)
        results["bad_inputs"] = bad_inputs(work, reference)
        text = report(args.note, results, started)
    print(text)
    if args.out is not None:
        out = args.out if args.out.is_absolute() else Path(__file__).resolve().parents[1] / args.out
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)


if __name__ == "__main__":
    main_benchmark()
