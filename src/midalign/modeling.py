"""Loading base models, tokenizers and adapters (HF hub ids or local paths), safely by default.

Weights are read from safetensors only: a folder holding only pickle checkpoints (`pytorch_model.bin`,
`adapter_model.bin`, ...) is refused, because unpickling can run arbitrary code. Remote code runs only when
the caller sets `trust_remote_code=True`.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from midalign.errors import ConfigError, UnsupportedModelError

# Weight files that are pickles (loading them can execute code); midalign never reads them.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")

BASE = "base"  # the system name of the bare base model next to its adapters (reports, predictions files)
_DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def weights_fingerprint(model) -> str:
    """A key that changes when the model's weights, dtype or architecture change (for caches of its outputs).

    Reads at most 4096 evenly spaced values of every parameter and buffer, with its name, shape and dtype, so it
    costs milliseconds even for an 8B model: retraining or reloading in another dtype changes it; an edit that
    touches none of the sampled values would not (no training step is that sparse).
    """
    import hashlib

    from midalign.layers import unwrap_model

    base = unwrap_model(model)
    digest = hashlib.sha256(type(base).__name__.encode())
    for name, tensor in [*base.named_parameters(), *base.named_buffers()]:
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        flat = tensor.detach().reshape(-1)
        if flat.numel() and flat.device.type != "meta":
            index = torch.linspace(0, flat.numel() - 1, min(flat.numel(), 4096), device=flat.device).long()
            digest.update(flat[index].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:20]


def file_fingerprint(*paths: str | os.PathLike) -> str:
    """A key of the contents of files and folders (recursively; hidden entries skipped), for stage caches."""
    import hashlib

    digest = hashlib.sha256()
    for root in map(Path, paths):
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for file in files:
            if any(part.startswith(".") for part in file.relative_to(root.parent).parts):
                continue
            digest.update(f"{file.relative_to(root.parent)}\0".encode())
            with open(file, "rb") as f:
                for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()[:20]


@contextlib.contextmanager
def quiet_peft_wrap() -> Iterator[None]:
    """Wrap a model in PEFT without transformers' deprecation warning for `is_gradient_checkpointing`.

    PEFT 0.21 reads that deprecated property whenever it builds a `PeftModel` (peft_model.py, `__init__`), so
    every command would print a FutureWarning that the user can do nothing about. Only that one warning, and only
    while PEFT wraps the model, is silenced; drop this once PEFT reads `is_activation_checkpointing`.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def _first_line(error: BaseException) -> str:
    return str(error).strip().split("\n", 1)[0]


def safetensors_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor in a safetensors file, from its header alone (no weights are read).

    Raises:
        ConfigError: naming the file, when it is truncated or not a safetensors file (safetensors' own error
            names neither the file nor the cause).
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError) as e:
        raise ConfigError(f"{path} is truncated or not a safetensors file ({_first_line(e)})") from None


def check_device(device: str, flag: str = "--device") -> str:
    """Return `device` ("auto", "cpu", "cuda", "cuda:1", "mps", ...) if this machine has it, before any model loads.

    Raises:
        ConfigError: naming `flag`, for a name torch does not know or a device this machine lacks.
    """
    if device == "auto":
        return device
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{flag} {device!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"{flag} {device}: this machine has no CUDA GPU that torch can use; use cpu or auto")
        if parsed.index is not None and parsed.index >= count:
            raise ConfigError(f"{flag} {device}: this machine has {count} CUDA GPU(s), numbered from 0")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{flag} {device}: MPS is not available on this machine; use cpu or auto")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{flag} {device}: midalign runs on cpu, cuda or mps")
    return device


def _check_local_path(name_or_path: str | os.PathLike) -> None:
    """Fail at once for a local folder that does not exist, instead of asking the hub for it (retries, then a
    traceback). A name is read as local when it starts like a path (`./`, `../`, `/`, `~`) or its parent folder
    exists here (`runs/base` with a `runs/` folder)."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    looks_local = text.startswith((".", "/", "~")) or (os.sep in text and path.parent.is_dir())
    if looks_local and not path.exists():
        raise ConfigError(f"{text}: no such model folder")


def resolve_dtype(dtype: str | torch.dtype | None):
    """Map a dtype name ("auto", "float32", "bfloat16", "float16") to what `from_pretrained` takes."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; choose one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def load_tokenizer(name_or_path: str | os.PathLike, *, trust_remote_code: bool = False):
    """Load a tokenizer and make sure it can pad (the EOS token is used when it has no pad token)."""
    from transformers import AutoTokenizer

    _check_local_path(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:  # not found, offline, a corrupt tokenizer or config file
        raise ConfigError(f"cannot load the tokenizer of {name_or_path}: {_first_line(e)}") from e
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ConfigError(f"tokenizer of {name_or_path} has neither a pad nor an EOS token")
        tok.pad_token = tok.eos_token
    return tok


def model_init_kwargs(value, flag: str = "--model_init_kwargs") -> dict:
    """Keyword arguments for `from_pretrained` (`dtype`, `attn_implementation`, `revision`, `device_map`,
    `quantization_config`, ...) from a mapping or its JSON text (the command line's form).

    Raises:
        ConfigError: text that is not a JSON object, or a key that has its own option (`trust_remote_code`) or
            that would load pickle weights (`use_safetensors`).
    """
    import json

    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{flag}: not JSON ({e.msg} at character {e.pos}): {value!r}") from None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{flag}: expected a JSON object of from_pretrained arguments, got {type(value).__name__}")
    refused = {"trust_remote_code": "use --trust_remote_code", "use_safetensors": "midalign loads safetensors only"}
    for key, why in refused.items():
        if key in value:
            raise ConfigError(f"{flag}: {key} is not taken here ({why})")
    return dict(value)


def load_model(
    name_or_path: str | os.PathLike,
    *,
    dtype: str | torch.dtype | None = "auto",
    trust_remote_code: bool = False,
    adapter: str | os.PathLike | None = None,
    init_kwargs: Mapping | str | None = None,
):
    """Load an `AutoModelForCausalLM` (safetensors only) and optionally a PEFT adapter on top of it.

    `init_kwargs` reach `from_pretrained` as given (see `model_init_kwargs`); a `dtype` there wins over `dtype`. A
    `quantization_config` may be a `BitsAndBytesConfig` or its dictionary (`{"load_in_4bit": true, ...}`).
    """
    from transformers import AutoModelForCausalLM

    _check_local_path(name_or_path)
    folder = Path(name_or_path)
    if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
        base = _recorded_base(folder)
        raise ConfigError(
            f"{folder} is a PEFT adapter, not a base model: pass its base model{f' ({base})' if base else ''} as "
            "the model and this folder as the adapter"
        )
    weights = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if folder.is_dir() and not weights:
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        held = f"only pickle weights ({', '.join(pickles)})" if pickles else "no weights"
        raise ConfigError(
            f"{folder} holds {held}; midalign loads safetensors only (unpickling can run code). Convert the "
            "checkpoint once with a trusted tool, e.g. `model.save_pretrained(folder)` (safetensors by default)"
        )
    for file in weights:  # headers only: a truncated file is named now, not by a traceback from inside loading
        safetensors_shapes(file)
    try:
        extra = model_init_kwargs(init_kwargs)
        extra["dtype"] = resolve_dtype(extra.get("dtype", dtype))
        quantization = extra.get("quantization_config")
        if isinstance(quantization, Mapping) and {"load_in_4bit", "load_in_8bit"} & quantization.keys():
            from transformers import BitsAndBytesConfig

            extra["quantization_config"] = BitsAndBytesConfig(**quantization)
        model = AutoModelForCausalLM.from_pretrained(
            str(name_or_path), trust_remote_code=trust_remote_code, use_safetensors=True, **extra
        )
    except OSError as e:  # not found, offline, no safetensors on the hub, unreadable files
        raise ConfigError(f"cannot load the model {name_or_path}: {_first_line(e)}") from e
    except ImportError as e:  # a quantization_config whose library is not installed (bitsandbytes, ...)
        raise ConfigError(f"cannot load the model {name_or_path} as asked: {_first_line(e)}") from e
    except ValueError as e:  # a corrupt config.json, or an architecture that is not a causal LM (T5, BERT, ...)
        raise UnsupportedModelError(f"cannot load {name_or_path} as a causal LM: {_first_line(e)}") from e
    except RuntimeError as e:  # weights whose shapes config.json does not describe (and a hub file gone bad)
        raise ConfigError(f"cannot load the model {name_or_path}: {_first_line(e)}") from e
    if adapter is not None:
        model = load_adapter(model, adapter)
    return model


def load_adapter(model, adapter: str | os.PathLike, *, adapter_name: str = "default", is_trainable: bool = False):
    """Put the PEFT adapter saved in `adapter` on `model`; refuse an adapter made for another base model."""
    from peft import PeftModel

    cfg = read_adapter_config(adapter)
    check_adapter_matches(model, cfg, str(adapter), adapter=adapter)
    with quiet_peft_wrap():
        return PeftModel.from_pretrained(model, str(adapter), adapter_name=adapter_name, is_trainable=is_trainable)


def adapter_systems(
    model, adapters: Mapping[str, str | os.PathLike], *, include_base: bool = False
) -> Iterator[tuple[str, object]]:
    """Yield `(name, model)` for the bare base (if asked) and then each adapter, loading the base once.

    The one adapter loop of `evaluate` and `analyze`. The base comes first, before any adapter wraps it. The
    first adapter wraps the base in a `PeftModel` (`load_adapter`, which refuses adapters made for another
    model); later ones are added with `PeftModel.load_adapter` and switched to with `set_adapter`, so exactly
    one adapter is active for each yielded system. Use each yielded model before asking for the next.

    Args:
        model: the base causal LM.
        adapters: system name -> PEFT adapter folder, in order.
        include_base: also yield `("base", model)` first.

    Raises:
        ConfigError: an adapter is named "base" (the bare base model's name in every report), or a folder is
            not a PEFT adapter (or does not fit the base model).
    """
    if BASE in adapters:
        raise ConfigError(f"an adapter is named {BASE!r}, which names the bare base model; rename it")
    if include_base:
        yield BASE, model
    peft_model = None
    for name, path in adapters.items():
        if peft_model is None:
            peft_model = load_adapter(model, path, adapter_name=name)
        else:
            check_adapter_matches(peft_model, read_adapter_config(path), str(path), adapter=path)
            peft_model.load_adapter(str(path), adapter_name=name)
        peft_model.set_adapter(name)
        yield name, peft_model


def read_adapter_config(adapter: str | os.PathLike):
    """The `PeftConfig` of a local adapter folder, after checking it holds a whole `adapter_model.safetensors`.

    Raises:
        ConfigError: no such folder, not an adapter folder, pickle weights only (`adapter_model.bin`), a truncated
            weights file, or an unreadable `adapter_config.json`.
    """
    from peft import PeftConfig

    path = Path(adapter)
    if not path.exists():
        raise ConfigError(f"{path}: no such adapter folder")
    if not path.is_dir():
        raise ConfigError(f"{path} is a file, not an adapter folder")
    if not (path / "adapter_config.json").is_file():
        raise ConfigError(f"{path}: not a PEFT adapter folder (adapter_config.json not found)")
    if not (path / "adapter_model.safetensors").is_file():
        pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        held = f"only pickle weights ({', '.join(pickles)})" if pickles else "no adapter_model.safetensors"
        raise ConfigError(f"{path}: the adapter holds {held}; midalign loads safetensors only")
    try:
        config = PeftConfig.from_pretrained(str(path))
    except (OSError, ValueError, TypeError, AttributeError, RecursionError) as e:  # malformed JSON or settings
        raise ConfigError(f"{path}: unreadable adapter_config.json: {e}") from e
    safetensors_shapes(path / "adapter_model.safetensors")  # header only: refuses a truncated file before any load
    return config


def _recorded_base(folder: Path) -> str | None:
    try:
        return read_adapter_config(folder).base_model_name_or_path or None
    except ConfigError:
        return None


def model_id(name: str) -> str:
    """A base model's name for comparison: a local folder by its resolved path, a hub id as it is."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name.rstrip("/")


def same_base(given: str, recorded: str) -> bool:
    """Whether the model `given` now is the one an adapter recorded as its base.

    A recorded relative folder (`runs/x/base`, relative to where training ran) also matches a given folder
    whose path ends with it, so an adapter can be used from another working directory.
    """
    if model_id(given) == model_id(recorded):
        return True
    rec = Path(recorded)
    given_path = Path(model_id(given))
    return not rec.is_absolute() and given_path.is_absolute() and given_path.parts[-len(rec.parts) :] == rec.parts


def check_tokenizer_fits(model, tokenizer, where: str) -> None:
    """Refuse a tokenizer whose ids the model's embedding table cannot hold (another model's tokenizer); the
    model would otherwise fail deep inside the forward pass with `IndexError: index out of range in self`."""
    from midalign.layers import unwrap_model

    embeddings = getattr(unwrap_model(model), "get_input_embeddings", lambda: None)()
    rows = getattr(embeddings, "num_embeddings", None)
    if rows is not None and len(tokenizer) > rows:  # a model without an embedding table is refused elsewhere
        raise ConfigError(
            f"{where}: the tokenizer has {len(tokenizer)} tokens but the model's embedding table has {rows} rows; "
            "they do not belong together (was the model folder rewritten by another example?)"
        )


def check_adapter_base(given: str, peft_config, where: str) -> None:
    """Refuse an adapter whose recorded base model is not `given` (a hub id or folder; "" = unknown, accepted)."""
    recorded = getattr(peft_config, "base_model_name_or_path", None)
    if recorded and given and not same_base(str(given), recorded):
        raise ConfigError(
            f"{where}: the adapter was trained on {recorded!r}, not on the base model {str(given)!r}. If these name "
            "the same model, pass the base as the adapter names it (or set base_model_name_or_path in its "
            "adapter_config.json)"
        )


def check_adapter_matches(model, peft_config, where: str, *, adapter: str | os.PathLike | None = None) -> None:
    """Refuse an adapter made for another base model: one check for every command that loads adapters.

    - the base the adapter recorded (`base_model_name_or_path`) must be the model given (see `same_base`);
    - the blocks it targets must exist;
    - with `adapter` (its folder), every LoRA factor must fit the module it adapts (`check_adapter_shapes`), so a
      model of another size is one line here, not PEFT's list of every mismatched tensor.
    """
    from midalign.layers import decoder_layers, unwrap_model

    check_adapter_base(getattr(unwrap_model(model), "name_or_path", "") or "", peft_config, where)
    n_layers = len(decoder_layers(model))
    layers = getattr(peft_config, "layers_to_transform", None)
    if layers is not None:
        wanted = [layers] if isinstance(layers, int) else list(layers)
        if wanted and max(wanted) >= n_layers:
            raise ConfigError(
                f"{where}: adapter targets layer {max(wanted)} but the base model has {n_layers} decoder blocks"
            )
    if adapter is not None:
        check_adapter_shapes(model, adapter, where)


# Saved LoRA factors are named `base_model.model.<module>.lora_A.weight` (PEFT drops the adapter name); A is
# [r, in_features] and B is [out_features, r].
_LORA_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<factor>[AB])\.weight$")


def check_adapter_shapes(model, adapter: str | os.PathLike, where: str) -> None:
    """Refuse an adapter whose LoRA factors do not fit the linear modules of `model` (read from the file's header).

    Raises:
        ConfigError: naming the adapter, the model and the first module that does not fit.
    """
    from midalign.layers import unwrap_model

    base = unwrap_model(model)
    modules = dict(base.named_modules())
    model_name = getattr(base, "name_or_path", "") or type(base).__name__
    for key, shape in safetensors_shapes(Path(adapter) / "adapter_model.safetensors").items():
        match = _LORA_KEY.match(key)
        if match is None or len(shape) != 2:
            continue  # embeddings, convolutions and extras keep PEFT's own checks
        name, factor = match["module"], match["factor"]
        module = modules.get(name)
        if module is None:
            raise ConfigError(f"{where} does not fit the model {model_name}: it adapts {name}, which the model lacks")
        size = getattr(module, "in_features" if factor == "A" else "out_features", None)
        if not isinstance(size, int):
            continue
        got = shape[1] if factor == "A" else shape[0]
        if got != size:
            leaf = name.rsplit(".", 1)[-1]
            side = f"takes {size} inputs" if factor == "A" else f"gives {size} outputs"
            raise ConfigError(
                f"{where} does not fit the model {model_name}: lora_{factor} of {name} is "
                f"{shape[0]}x{shape[1]}, the model's {leaf} {side}"
            )
