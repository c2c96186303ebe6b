"""Dequantize GGUF tensors, undo llama.cpp's layout changes, and write mlx safetensors shards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gguf.quants
import mlx.core as mx
import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from tqdm import tqdm

from .errors import GGUFImportError
from .gguf_arch import CONFIG_ONLY_TENSORS, ArchSpec, mlx_name
from .gguf_file import GGUFFile, TensorInfo

DTYPES = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}
# mlx-lm's own shard size (mlx_lm.utils.MAX_FILE_SIZE_GB).
MAX_SHARD_BYTES = 5 << 30
# Rows are dequantized in chunks of about this many values: big enough that Python overhead
# vanishes, small enough that temporaries stay in the tens of MB.
_CHUNK_VALUES = 1 << 22
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="gguf-dequant")
_PLAIN = (GGMLQuantizationType.F32, GGMLQuantizationType.F16)


def dequantize(raw: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
    """`gguf.quants.dequantize` without its 16-rows-at-a-time Python loop (which dominates on
    a 262k-row embedding), with chunks spread over two threads (numpy releases the GIL)."""
    codec = getattr(gguf.quants, qtype.name, None)
    if not hasattr(codec, "dequantize_rows") or qtype in _PLAIN:
        return gguf.quants.dequantize(raw, qtype)  # a view, or NotImplementedError
    block, type_size = GGML_QUANT_SIZES[qtype]
    rows = raw.reshape(-1, raw.shape[-1])
    out = np.empty((rows.shape[0], rows.shape[1] // type_size * block), np.float32)
    codec.init_grid()  # the IQ types decode through a lookup grid built on first use
    step = max(1, _CHUNK_VALUES // out.shape[1])

    def run(start: int) -> None:
        out[start : start + step] = codec.dequantize_rows(rows[start : start + step])

    list(_POOL.map(run, range(0, rows.shape[0], step)))
    return out.reshape(*raw.shape[:-1], out.shape[-1])


def unpermute_qk(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Invert llama.cpp's `permute` of q/k rows (interleaved rope -> HF's rotate-half layout)."""
    rows = weight.shape[0]
    w = weight.reshape(n_head, rows // n_head // 2, 2, *weight.shape[1:])
    return w.swapaxes(1, 2).reshape(weight.shape)


def convert_tensor(
    gguf: GGUFFile, info: TensorInfo, spec: ArchSpec, config: dict, dtype: mx.Dtype
) -> tuple[str, mx.array]:
    """One GGUF tensor as (mlx-lm name, mx array of `dtype`)."""
    try:
        values = dequantize(gguf.tensor_bytes(info), info.qtype)
    except NotImplementedError:
        raise GGUFImportError(
            f"{gguf.path}: tensor {info.name!r} uses tensor type {info.qtype.name}, "
            "which the gguf package cannot dequantize"
        ) from None
    values = values.astype(np.float32, copy=False)
    if spec.permute_qk and (".attn_q." in info.name or ".attn_k." in info.name):
        is_q = ".attn_q." in info.name
        heads = config["num_attention_heads"] if is_q else config["num_key_value_heads"]
        values = unpermute_qk(values, heads)
    if spec.norm_shift and info.name.endswith("norm.weight"):
        values = values - np.float32(spec.norm_shift)
    return mlx_name(spec, info.name), mx.array(values).astype(dtype)


def weight_tensors(gguf: GGUFFile) -> list[TensorInfo]:
    """The tensors that become model weights, in name order."""
    infos = [t for t in gguf.tensors.values() if t.name not in CONFIG_ONLY_TENSORS]
    return sorted(infos, key=lambda t: t.name)


def check_layout(gguf: GGUFFile, spec: ArchSpec, config: dict) -> None:
    """Compare tensor names and shapes with the mlx-lm model the config describes, before
    any dequantizing, so a mismatch is a clear error now rather than a failed load later."""
    import importlib

    from mlx.utils import tree_flatten

    module = importlib.import_module(f"mlx_lm.models.{spec.model_type}")
    model = module.Model(module.ModelArgs.from_dict(config))  # lazy: allocates nothing yet
    expected = {k: tuple(v.shape) for k, v in tree_flatten(model.parameters())}
    if config.get("tie_word_embeddings"):
        expected.pop("lm_head.weight", None)
    found = {mlx_name(spec, t.name): (t.name, t.shape) for t in weight_tensors(gguf)}
    for name, (gguf_name, shape) in found.items():
        if name not in expected:
            raise GGUFImportError(f"{gguf.path}: tensor {gguf_name!r} has no place in the model")
        if shape != expected[name]:
            raise GGUFImportError(
                f"{gguf.path}: tensor {gguf_name!r} has shape {shape}, "
                f"the {spec.model_type} config implies {expected[name]}"
            )
    missing = sorted(set(expected) - set(found))
    if missing:
        raise GGUFImportError(f"{gguf.path}: tensors missing for {', '.join(missing[:5])}")


def plan_shards(
    infos: list[TensorInfo], dtype: mx.Dtype, max_bytes: int = MAX_SHARD_BYTES
) -> list[list[TensorInfo]]:
    """Group tensors into shards of at most `max_bytes` of output (one oversized tensor alone)."""
    shards: list[list[TensorInfo]] = [[]]
    size = 0
    for info in infos:
        nbytes = _values(info) * dtype.size
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(info)
        size += nbytes
    return shards


def write_weights(
    gguf: GGUFFile,
    spec: ArchSpec,
    config: dict,
    out_dir: Path,
    dtype: str,
    progress: bool = True,
    max_shard_bytes: int = MAX_SHARD_BYTES,
) -> None:
    """Convert every weight tensor and write `model.safetensors` (or shards plus an index)."""
    mx_dtype = DTYPES[dtype]
    infos = weight_tensors(gguf)
    shards = plan_shards(infos, mx_dtype, max_shard_bytes)
    names = _shard_names(len(shards))
    weight_map: dict[str, str] = {}
    bar = tqdm(
        total=sum(_values(info) for info in infos),
        desc=f"Dequantizing {gguf.path.name}",
        unit="param",
        unit_scale=True,
        disable=not progress,
    )
    with bar:
        for shard, file_name in zip(shards, names, strict=True):
            arrays = dict(_convert_all(gguf, shard, spec, config, mx_dtype, bar))
            mx.save_safetensors(str(out_dir / file_name), arrays, metadata={"format": "mlx"})
            weight_map.update({name: file_name for name in arrays})
            del arrays
    if len(shards) > 1:
        index = {"metadata": {}, "weight_map": dict(sorted(weight_map.items()))}
        (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def _convert_all(
    gguf: GGUFFile, infos: list[TensorInfo], spec: ArchSpec, config: dict, dtype: mx.Dtype, bar
) -> Iterator[tuple[str, mx.array]]:
    for info in infos:
        bar.set_postfix_str(f"{info.name} ({info.qtype.name})", refresh=False)
        name, array = convert_tensor(gguf, info, spec, config, dtype)
        mx.eval(array)  # materialize now so the float32 numpy copy can be freed
        yield name, array
        bar.update(_values(info))


def _values(info: TensorInfo) -> int:
    return int(np.prod(info.shape))


def _shard_names(count: int) -> list[str]:
    if count == 1:
        return ["model.safetensors"]
    return [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]
