"""TensorRT on an NVIDIA GPU: engines built from the exported ONNX with TensorRT's Python API, and run.

Networks are built *strongly typed*: the precision lives in the ONNX graph (FP32 file, FP16 file, or a
symmetric INT8 QDQ file) rather than in builder flags. That is the only mode TensorRT 11 keeps (its
FP16/INT8 flags are gone; they were deprecated in 10.12) and it works from TensorRT 10.0 on. Where
TensorRT or a CUDA GPU is missing, the exact ``trtexec`` equivalent is written next to the ONNX so the
engine can be built on the target device. Not run on the development machines (no GPU there).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

import torch

from ...pipeline.errors import CakdError
from ...pipeline.files.fileio import atomic_path, write_json, write_text
from ..artefacts import int8_kinds
from .base import INPUT_NAME, Precision, Runner, Runtime, Session, Settings


def unavailable() -> str | None:
    """Why no engine can be built or run here, or None when TensorRT and a CUDA GPU are present."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed (pip install 'cakd[trt]' on a machine with an NVIDIA GPU)"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible"
    return None


def profile_shapes(batch_sizes: list[int], img_size: int, in_chans: int = 3) -> dict[str, list[int]]:
    """The optimisation profile: smallest, middle and largest of the requested batch sizes."""
    sizes = sorted(batch_sizes)
    return {name: [b, in_chans, img_size, img_size]
            for name, b in (("min", sizes[0]), ("opt", sizes[len(sizes) // 2]), ("max", sizes[-1]))}


def trtexec_command(onnx_path: Path, engine_path: Path, batch_sizes: list[int], img_size: int,
                    workspace_mb: int, in_chans: int = 3) -> str:
    """The ``trtexec`` line that builds the same engine as ``build_engine``."""
    dims = {name: "x".join(map(str, shape)) for name, shape in profile_shapes(batch_sizes, img_size, in_chans).items()}
    return " ".join([
        "trtexec", f"--onnx={shlex.quote(str(onnx_path))}", f"--saveEngine={shlex.quote(str(engine_path))}",
        "--stronglyTyped",
        f"--minShapes={INPUT_NAME}:{dims['min']}", f"--optShapes={INPUT_NAME}:{dims['opt']}",
        f"--maxShapes={INPUT_NAME}:{dims['max']}", f"--memPoolSize=workspace:{workspace_mb}M",
    ])


def write_trtexec_script(onnx_path: Path, engine_path: Path, batch_sizes: list[int], img_size: int,
                         workspace_mb: int, in_chans: int = 3) -> Path:
    """``<onnx stem>.trtexec.sh`` next to the ONNX; paths are relative to it, so the folder can be copied
    to the target device as is."""
    script = onnx_path.with_name(f"{onnx_path.stem}.trtexec.sh")
    command = trtexec_command(Path(onnx_path.name), Path(engine_path.name), batch_sizes, img_size, workspace_mb,
                              in_chans)
    write_text(script, "#!/bin/sh\n# Build the TensorRT engine on the target device (NVIDIA GPU + TensorRT >= 10).\n"
               f'set -e\ncd "$(dirname "$0")"\n{command}\n')
    script.chmod(0o755)
    return script


def build_engine(onnx_path: str | Path, engine_path: str | Path, precision: Precision, batch_sizes: list[int],
                 workspace_mb: int, img_size: int, in_chans: int = 3) -> dict:
    """Build and serialise an engine (atomically) plus ``<engine>.json``; without TensorRT or a GPU, write
    the trtexec script and raise ``CakdError`` naming what is missing and where the script is."""
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    missing = unavailable()
    if missing is not None:
        script = write_trtexec_script(onnx_path, engine_path, batch_sizes, img_size, workspace_mb, in_chans)
        raise CakdError(f"cannot build a TensorRT engine here: {missing}; the equivalent trtexec command is in "
                        f"{script}")

    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise CakdError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    shapes = profile_shapes(batch_sizes, img_size, in_chans)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise CakdError(f"TensorRT could not build an engine from {onnx_path} (see its log above)")
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    sidecar = {"engine": engine_path.name, "onnx": onnx_path.name, "precision": precision,
               "tensorrt_version": trt.__version__, "gpu": torch.cuda.get_device_name(0), "input": INPUT_NAME,
               "input_shapes": shapes, "workspace_mb": workspace_mb, "size_bytes": engine_path.stat().st_size}
    write_json(engine_path.with_name(engine_path.name + ".json"), sidecar)
    return sidecar


def engine_runner(engine_path: str | Path) -> Runner:
    """Run a serialised engine on torch CUDA tensors (no pycuda): inputs and outputs stay on the GPU for
    timing; ``predict`` copies in and out."""
    import tensorrt as trt

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(Path(engine_path).read_bytes())
    context = engine.create_execution_context()
    output_name = next(n for n in (engine.get_tensor_name(i) for i in range(engine.num_io_tensors))
                       if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
    _, c, h, w = engine.get_tensor_profile_shape(INPUT_NAME, 0)[2]

    def infer(x: torch.Tensor) -> torch.Tensor:
        x = x.to("cuda", torch.float32).contiguous()
        context.set_input_shape(INPUT_NAME, tuple(x.shape))
        out = torch.empty(tuple(context.get_tensor_shape(output_name)), device="cuda", dtype=torch.float32)
        context.set_tensor_address(INPUT_NAME, x.data_ptr())
        context.set_tensor_address(output_name, out.data_ptr())
        stream = torch.cuda.current_stream()  # the stream the input copy was queued on
        context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        return out

    def timed_call(batch: int) -> Callable[[], None]:
        x = torch.randn(batch, c, h, w, generator=torch.Generator().manual_seed(0)).cuda()
        return lambda: infer(x)

    return Runner(lambda x: infer(x).cpu(), timed_call)


def options(settings: Settings) -> dict:
    return {"network": "strongly typed", "profile_batch_sizes": list(settings.batch_sizes),
            "workspace_mb": settings.workspace_mb}


def build(session: Session) -> Runner:
    """Compile the session's ONNX into an engine in the bench's work folder (as OpenVINO compiles its
    model on load: the engine belongs to this GPU), then run it."""
    cfg = options(session.settings)
    engine = session.settings.work_dir / f"{session.path.stem}.{session.precision}.engine"
    build_engine(session.path, engine, session.precision, cfg["profile_batch_sizes"], cfg["workspace_mb"],
                 session.img_size, session.in_chans)
    return engine_runner(engine)


RUNTIME = Runtime("tensorrt", {"fp32": ("onnx",), "fp16": ("onnx-fp16",), "int8": int8_kinds("trt")},
                  "onnxruntime", unavailable, options, build)
