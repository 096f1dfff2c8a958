"""``smose video``: one deterministic episode rendered headless, with the active expert drawn on every frame.

Frames come from Gymnasium's ``render_mode="rgb_array"``; MuJoCo renders off-screen through EGL (or OSMesa) when
``MUJOCO_GL`` says so, which needs no display. Each frame gets a border and a label in the colour of the expert that
acts on that state (the colours of the report), plus the step and the return so far. mp4 is written with imageio's
ffmpeg plugin, GIF with Pillow.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from smose.errors import SmoseError
from smose.interpret.report.figures import expert_color
from smose.rollout import EVAL_SEED_OFFSET, rollout
from smose.run import MODEL_META

FORMATS = (".mp4", ".gif")
TARGET_FPS = 30  # frames are rendered every ceil(render_fps / TARGET_FPS) steps: real-time playback, less rendering
GIF_MIN_DELAY_MS = 20  # browsers slow down GIF frames shorter than this
DENSE_COLOR = "#4d5a66"


def configure_headless_gl() -> None:
    """Default to EGL off-screen rendering; must run before MuJoCo creates its first GL context.

    MuJoCo's EGL/OSMesa bindings refuse to load when PyOpenGL is set to another platform, so the platform follows the
    backend (as ``import mujoco`` does itself when MUJOCO_GL is set before it is imported).
    """
    backend = os.environ.setdefault("MUJOCO_GL", "egl")
    if backend in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", backend)


def _hex_rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def draw_overlay(frame: np.ndarray, label: str, color: str, info: str) -> np.ndarray:
    """The frame with a border and a label box in ``color`` (top left) and ``info`` below it."""
    image = Image.fromarray(np.ascontiguousarray(frame[..., :3]))
    draw = ImageDraw.Draw(image)
    width, height = image.size
    rgb = _hex_rgb(color)
    border = max(3, min(width, height) // 80)
    draw.rectangle([0, 0, width - 1, height - 1], outline=rgb, width=border)
    size = max(12, min(width, height) // 18)
    font = ImageFont.load_default(size=size)
    small = ImageFont.load_default(size=max(10, size * 2 // 3))
    pad = border + size // 3
    left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
    draw.rounded_rectangle([pad, pad, pad + (right - left) + size, pad + (bottom - top) + size * 2 // 3],
                           radius=size // 4, fill=rgb)
    draw.text((pad + size // 2 - left, pad + size // 3 - top), label, font=font, fill="white",
              stroke_width=max(1, size // 16), stroke_fill=(0, 0, 0))
    info_top = pad + (bottom - top) + size
    draw.text((pad, info_top), info, font=small, fill="white", stroke_width=2, stroke_fill=(0, 0, 0))
    return np.asarray(image)


def _render(env, env_id: str) -> np.ndarray:
    try:
        frame = env.render()
    except Exception as exc:  # GL/driver/pygame failures come as many exception types; all mean "cannot render here"
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise SmoseError(
            f"cannot render {env_id} headless ({type(exc).__name__}: {detail}); install Mesa's EGL "
            f"(`make setup-render`, or apt-get install libegl1 libgl1-mesa-dri) or set MUJOCO_GL=egl|osmesa"
        ) from None
    if not isinstance(frame, np.ndarray) or frame.ndim != 3:
        raise SmoseError(f"{env_id} did not return an RGB frame from render()")
    return frame


class _Writer:
    """Streams frames to an mp4 (ffmpeg) or collects them for a GIF; writes to a temporary file, then renames."""

    def __init__(self, out: Path, fps: float):
        self.out, self.fps = out, fps
        self.tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
        self.frames: list[Image.Image] = []
        self.count = 0
        self._mp4 = None
        if out.suffix == ".mp4":
            try:
                import imageio.v2 as imageio
                import imageio_ffmpeg  # noqa: F401  (imageio's mp4 writer needs its ffmpeg binary)
            except ImportError:
                raise SmoseError("writing mp4 needs imageio and imageio-ffmpeg (pip install imageio imageio-ffmpeg); "
                                 "or write a .gif") from None
            # yuv420p plays everywhere and needs even frame sizes, hence macro_block_size=2.
            self._mp4 = imageio.get_writer(self.tmp, format="FFMPEG", fps=fps, codec="libx264", quality=7,
                                           pixelformat="yuv420p", macro_block_size=2)

    def add(self, frame: np.ndarray) -> None:
        self.count += 1
        if self._mp4 is not None:
            self._mp4.append_data(frame)
        else:
            self.frames.append(Image.fromarray(frame).quantize(colors=256, method=Image.Quantize.MEDIANCUT))

    def close(self) -> None:
        if self._mp4 is not None:
            self._mp4.close()
        else:
            delay = max(GIF_MIN_DELAY_MS, round(1000 / self.fps / 10) * 10)
            self.frames[0].save(self.tmp, format="GIF", save_all=True, append_images=self.frames[1:], duration=delay,
                                loop=0)
        os.replace(self.tmp, self.out)

    def abort(self) -> None:
        if self._mp4 is not None:
            self._mp4.close()
        self.tmp.unlink(missing_ok=True)


def record_video(
    run_dir: Path | str,
    out: Path | str,
    router: str | None = None,
    tree_kind: str | None = None,
    seed: int = 0,
    max_steps: int | None = None,
) -> dict:
    """Render one deterministic episode (reset seed ``seed + EVAL_SEED_OFFSET``, the first episode of
    ``smose eval --seed seed``) to ``out`` (.mp4 or .gif); returns a summary of what was written."""
    from smose.interpret.tree_policy import routing
    from smose.interpret.trees import load_tree_router, require_smose
    from smose.serialization import check_env_compatible, load_model
    from smose.tasks.envs import make_run_env

    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise SmoseError(f"--out {out}: unknown video format {out.suffix or '(none)'!r}; use a .mp4 or .gif file name")
    out = out.with_suffix(out.suffix.lower())
    if not out.parent.is_dir():
        raise SmoseError(f"--out {out}: directory {out.parent} does not exist")
    if max_steps is not None and max_steps < 1:
        raise SmoseError(f"--max-steps must be positive, got {max_steps}")
    if router not in (None, "neural", "tree"):
        raise SmoseError(f"unknown router {router!r}; expected 'neural' or 'tree'")
    run_dir = Path(run_dir)
    actor, meta = load_model(run_dir)
    router, tree_kind = routing(actor, run_dir, router, tree_kind)  # a fine-tuned controller: its own trees
    algo = meta["architecture"]["algo"]
    tree_router = None
    if router == "tree":
        tree_router = load_tree_router(run_dir, tree_kind, require_smose(actor, meta, run_dir), meta["env_id"])

    configure_headless_gl()
    env_id = meta["env_id"]
    try:
        env = make_run_env(meta, render_mode="rgb_array")
    except (RuntimeError, ImportError, OSError) as exc:  # MuJoCo checks MUJOCO_GL and loads GL when first imported
        raise SmoseError(f"cannot set up rendering for {env_id} ({type(exc).__name__}: {exc}); "
                         f"check MUJOCO_GL={os.environ.get('MUJOCO_GL')!r} (egl, osmesa or glfw)") from None
    writer: _Writer | None = None
    try:
        check_env_compatible(meta, env, run_dir / MODEL_META)
        if "rgb_array" not in env.metadata.get("render_modes", []):
            raise SmoseError(f"{env_id} cannot render frames (no rgb_array render mode)")
        render_fps = float(env.metadata.get("render_fps") or TARGET_FPS)
        stride = max(1, math.ceil(render_fps / TARGET_FPS))
        n_experts = getattr(actor, "n_experts", 0)
        usage = np.zeros(n_experts, dtype=np.int64)
        step, total, size = 0, 0.0, None

        def draw(expert: torch.Tensor | None) -> None:
            """Add the frame of the state ``expert`` acts on (``step`` and ``total`` are still those before it)."""
            nonlocal writer, size
            if step % stride:
                return
            frame = _render(env, env_id)
            if expert is None:
                label, color = algo, DENSE_COLOR
            else:
                m = int(expert[0])
                label, color = f"expert {m}", expert_color(m)
            frame = draw_overlay(frame, label, color, f"step {step}   return {total:.1f}")
            if writer is None:
                writer = _Writer(out, render_fps / stride)
            writer.add(frame)
            size = [int(frame.shape[1]), int(frame.shape[0])]

        for taken in rollout(actor, env, 1, seed, EVAL_SEED_OFFSET, router=tree_router, before_step=draw):
            if taken.expert is not None:
                usage[int(taken.expert[0])] += 1
            total += float(taken.reward)
            step += 1
            if max_steps is not None and step >= max_steps:
                break
        assert writer is not None  # step 0 always renders a frame
        writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        env.close()
    summary = {"out": str(out), "env_id": env_id, "router": router if n_experts else "dense", "seed": seed,
               "steps": step, "return": total, "frames": writer.count, "fps": render_fps / stride,
               "size": size}
    if router == "tree":
        summary["tree_kind"] = tree_kind
    if n_experts:
        summary["expert_usage"] = (usage / max(1, usage.sum())).round(6).tolist()
    return summary
