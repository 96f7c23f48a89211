"""``pipeline export --format onnx``: one ONNX graph per modality, checked against PyTorch.

Each graph is the extractor's :class:`pipelines.inference.FeatureGraph` of one modality,
exported by PyTorch's ``torch.export``-based ONNX exporter (``torch.onnx.export(...,
dynamo=True)``):

* input ``images``: float32 (B, 3, H, W), RGB in [0, 1] at the checkpoint's H x W, B free;
* inside: ImageNet normalisation, for TSME the generator and the partner's uint8
  quantisation, the method's test feature, the flip average when the checkpoint tests with
  flip, the L2 normalisation;
* output ``features``: float32 (B, D), what :meth:`ReidExtractor.extract` returns for the
  same pixels;
* metadata (``metadata_props``): height, width, dim, method, modality, feature, flip, opset,
  checkpoint_sha256, input and output descriptions.

Every graph is run with onnxruntime on a seeded random batch (of a batch size other than
the one it was traced with, which also checks that the batch axis is free) and compared with
PyTorch in float32 on the CPU; the largest absolute difference is reported, and a graph
beyond the tolerance (1e-4) is not written: the export stops at the first graph that fails,
and nothing is written unless every modality's graph passes.

``onnx`` and ``onnxruntime`` (and ``onnxscript``, which the exporter uses) are the
``export`` extra: ``pip install 'vireid-pipeline[export]'``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.atomic import atomic_write
from common.errors import UserError
from pipelines.inference import MODALITY_WORDS, ReidExtractor

#: The packages the export needs, and the line that installs them.
EXPORT_PACKAGES = ("onnx", "onnxruntime", "onnxscript")
INSTALL_LINE = "pip install 'vireid-pipeline[export]'  (or: pip install onnx onnxruntime onnxscript)"
#: Largest |ONNX - PyTorch| allowed on the verification batch.
TOLERANCE = 1e-4
DEFAULT_OPSET = 18


def missing_export_packages() -> list[str]:
    """The packages of :data:`EXPORT_PACKAGES` that cannot be imported here."""
    return [name for name in EXPORT_PACKAGES if importlib.util.find_spec(name) is None]


def graph_paths(out: Path, modalities: tuple[str, ...]) -> dict[str, Path]:
    """``model.onnx`` -> ``{"vis": model-visible.onnx, "ir": model-infrared.onnx}``."""
    out = Path(out)
    suffix = out.suffix or ".onnx"
    return {m: out.with_name(f"{out.stem}-{MODALITY_WORDS[m]}{suffix}") for m in modalities}


def onnx_graph(extractor: ReidExtractor, modality: str, opset: int = DEFAULT_OPSET):
    """Export one modality's :class:`FeatureGraph` to an in-memory ``onnx.ModelProto``.

    The graph is traced on the CPU in float32 with a batch of 2 images and a free batch axis.

    Raises:
        UserError: the exporter cannot export this model (its first line, and the method).
    """
    import onnx

    graph = extractor.graph(modality).cpu().eval()
    example = torch.rand(2, 3, *extractor.image_size, generator=torch.Generator().manual_seed(1))
    try:
        with _quiet_exporter():
            program = torch.onnx.export(graph, (example,), dynamo=True, input_names=["images"], output_names=["features"],
                                        opset_version=opset, dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1)}},
                                        optimize=True, verify=False, report=False, verbose=False)
    except torch.onnx.OnnxExporterError as exc:  # torch.export and translation errors are wrapped in it
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UserError(f"method {extractor.method} ({MODALITY_WORDS[graph.modality]}) could not be exported to ONNX: {first}") from None
    buffer = io.BytesIO()
    program.save(buffer)
    return onnx.load_from_string(buffer.getvalue())


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Keep the exporter's progress lines and optimiser notes off the terminal (stdout holds results)."""
    loggers = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def add_metadata(model, extractor: ReidExtractor, modality: str) -> None:
    """Record what the graph computes in the model's ``metadata_props`` (all values strings)."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    h, w = extractor.image_size
    stream = extractor.modality(modality)
    meta = {
        "height": h, "width": w, "dim": extractor.dim, "method": extractor.method, "modality": MODALITY_WORDS[stream],
        "feature": extractor.feature, "flip": str(extractor.flip).lower(), "opset": opset,
        "checkpoint_sha256": extractor.sha256,
        "input": f"images: float32 (B, 3, {h}, {w}) RGB in [0, 1]",
        "output": f"features: float32 (B, {extractor.dim}), L2-normalised; distance = 1 - cosine",
    }
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    model.producer_name = "vireid-pipeline"


def verify(model_bytes: bytes, extractor: ReidExtractor, modality: str, *, batch: int = 3, seed: int = 0) -> float:
    """max |onnxruntime - PyTorch| over a seeded random batch in [0, 1], float32, CPU.

    Returns:
        The largest absolute difference of the features (inf when shapes differ).
    """
    import onnxruntime as ort

    graph = extractor.graph(modality).cpu().eval()
    images = torch.rand(batch, 3, *extractor.image_size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = graph(images).float().numpy()
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    got = session.run(["features"], {"images": images.numpy()})[0]
    if got.shape != expected.shape:
        return float("inf")
    return float(np.abs(got.astype(np.float64) - expected.astype(np.float64)).max())


def export_onnx(extractor: ReidExtractor, out: Path, *, opset: int = DEFAULT_OPSET, tolerance: float = TOLERANCE) -> list[dict[str, Any]]:
    """Export, verify and (if every graph passes) write one ONNX graph per modality.

    Args:
        extractor: a :class:`ReidExtractor` on the CPU (export traces in float32 on the CPU).
        out: ``model.onnx``; the graphs go to ``model-visible.onnx`` and ``model-infrared.onnx``.
        opset: ONNX opset to export with.
        tolerance: largest |ONNX - PyTorch| accepted.

    Returns:
        One ``{"modality", "path", "max_abs_diff", "written"}`` per graph, in modality order.

    Raises:
        UserError: ``onnx``/``onnxruntime`` missing (the install line), an extractor not on
            the CPU, a graph the exporter cannot make, a graph whose verification exceeds
            ``tolerance`` (names the modality and the difference; nothing is written), or an
            unwritable ``out``.
    """
    missing = missing_export_packages()
    if missing:
        raise UserError(f"ONNX export needs {', '.join(missing)}: {INSTALL_LINE}")
    if extractor.device.type != "cpu":
        raise ValueError("export_onnx traces and verifies on the CPU: build the ReidExtractor with device='cpu'")
    paths = graph_paths(out, extractor.modalities)
    results, payloads = [], []
    for stream, path in paths.items():
        model = onnx_graph(extractor, stream, opset)
        add_metadata(model, extractor, stream)
        payload = model.SerializeToString()
        diff = verify(payload, extractor, stream)
        if not diff <= tolerance:  # NaN fails too
            done = "".join(f"; {r['modality']} passed (max |diff| {r['max_abs_diff']:.3g})" for r in results)
            raise UserError(f"the ONNX graph of {extractor.method} ({MODALITY_WORDS[stream]}) disagrees with PyTorch: max |diff| "
                            f"{diff:.3g} > {tolerance:g}{done}; no file was written: try another --opset, or report the method and opset")
        results.append({"modality": MODALITY_WORDS[stream], "path": str(path), "max_abs_diff": diff, "written": False})
        payloads.append(payload)
    for result, payload in zip(results, payloads):
        atomic_write(Path(result["path"]), lambda fh, data=payload: fh.write(data))
        result["written"] = True
    return results
