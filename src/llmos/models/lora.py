"""LoRA: low-rank adapters over a frozen model (Hu et al., 2021, https://arxiv.org/abs/2106.09685).

A target ``nn.Linear`` (``W x + b``) becomes a :class:`LoraLinear` that adds
``(alpha / r) * B A dropout(x)`` per adapter, with ``A`` (r, in) and ``B`` (out, r); ``B``
starts at zero, so a fresh adapter leaves the model unchanged, and only ``A`` and ``B`` train.
The base weight keeps its name and tensor (``LoraLinear`` *is* an ``nn.Linear``), so base
checkpoints load as before and one base in memory serves every adapter.

Several adapters live side by side in one model, by name. Which one applies is model-wide
state set by :func:`use` (one adapter, or one per prompt of a batch): a batch may mix users'
adapters, each row gets its own update (the base matmul is shared; each adapter adds two thin
matmuls over its rows only), as S-LoRA and Punica batch them. Rows are laid out as the
generator lays them out: prompt ``i``'s rows are ``i * m .. i * m + m - 1`` when a batch holds
``m`` rows per prompt (beams, several samples per prompt).

Files are PEFT's (``adapter_config.json`` + ``adapter_model.safetensors``, keys
``base_model.model.<module>.lora_A.weight``): for a GPT, whose module names are Hugging Face
GPT-2's, an adapter saved here loads with ``peft.PeftModel.from_pretrained`` onto the HF
conversion of the base (tests/parity/test_lora_parity.py checks the logits agree).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from llmos.errors import CheckpointError, ConfigError
from llmos.files import atomic_directory

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
INFO_FILE = "llmos.json"  # what llmos adds: the base's digest, training metrics
PREFIX = "base_model.model."  # PEFT's key prefix for the wrapped model's modules

# What the GPT's attention projections are called (HF GPT-2 names): LoRA's paper adapts the
# attention weights; the MLP can be added through ``targets``.
GPT_TARGETS = ("attn.c_attn", "attn.c_proj")
GPT_ALL_TARGETS = (*GPT_TARGETS, "mlp.c_fc", "mlp.c_proj")  # the MLP too


@dataclass(frozen=True)
class LoraConfig:
    """One adapter's shape: rank ``rank``, scale ``alpha / rank``, dropout on its input, and the
    modules it adapts (``targets``: a module matches when its name is a target or ends with
    ``"." + target``, PEFT's rule)."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = GPT_TARGETS

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ConfigError(f"lora rank must be >= 1, got {self.rank}")
        if self.alpha <= 0:
            raise ConfigError(f"lora alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora dropout must be in [0, 1), got {self.dropout}")
        if not self.targets:
            raise ConfigError("lora targets must name at least one module")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def peft_json(self, base: str = "") -> dict[str, Any]:
        """``adapter_config.json`` as PEFT writes it (the fields it needs to load the file).
        ``fan_in_fan_out``: HF GPT-2 keeps these weights as ``Conv1D`` (in, out)."""
        return {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "r": self.rank,
            "lora_alpha": self.alpha,
            "lora_dropout": self.dropout,
            "target_modules": list(self.targets),
            "bias": "none",
            "fan_in_fan_out": True,
            "base_model_name_or_path": base,
            "inference_mode": True,
        }

    @classmethod
    def from_peft_json(cls, data: dict[str, Any], where: str = CONFIG_FILE) -> LoraConfig:
        if data.get("peft_type") != "LORA":
            raise CheckpointError(
                f"{where}: peft_type must be 'LORA', got {data.get('peft_type')!r}"
            )
        if data.get("bias", "none") != "none":
            raise CheckpointError(f"{where}: only bias 'none' adapters load, got {data['bias']!r}")
        targets = data.get("target_modules")
        if isinstance(targets, str) or not targets:
            raise CheckpointError(f"{where}: target_modules must be a list of module names")
        try:
            return cls(
                rank=int(data["r"]),
                alpha=float(data["lora_alpha"]),
                dropout=float(data.get("lora_dropout", 0.0)),
                targets=tuple(str(t) for t in targets),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{where}: expected r and lora_alpha numbers ({e})") from e


@dataclass
class Selection:
    """Which adapter applies, shared by every :class:`LoraLinear` of a model: ``active`` for
    the whole batch, or ``per_prompt`` (one name or None per prompt) for mixed batches."""

    active: str | None = None
    per_prompt: list[str | None] | None = None
    epoch: int = 0  # changes with every selection: layers' gathered weights follow it
    _groups: dict[int, list[tuple[str, torch.Tensor]]] = field(default_factory=dict)
    _slots: dict[int, tuple[tuple[str, ...], torch.Tensor]] = field(default_factory=dict)

    def set(self, active: str | None, per_prompt: list[str | None] | None) -> None:
        self.active, self.per_prompt = active, per_prompt
        self.epoch += 1
        self._groups, self._slots = {}, {}

    def slots(self, rows: int, device: torch.device) -> tuple[tuple[str, ...], torch.Tensor]:
        """The batch's adapters, and each row's index among them (``len(names)`` for a row
        without one), cached per row count."""
        if rows not in self._slots:
            groups = self.groups(rows, device)
            names = tuple(name for name, _ in groups)
            slot = torch.full((rows,), len(names), dtype=torch.long, device=device)
            for i, (_, idx) in enumerate(groups):
                slot[idx] = i
            self._slots[rows] = (names, slot)
        return self._slots[rows]

    def groups(self, rows: int, device: torch.device) -> list[tuple[str, torch.Tensor]]:
        """(adapter, row indices) for a batch of ``rows`` rows, cached per row count."""
        if rows not in self._groups:
            prompts = self.per_prompt or []
            if not prompts or rows % len(prompts):
                raise RuntimeError(
                    f"a batch of {rows} rows does not split into {len(prompts)} prompts"
                )
            m = rows // len(prompts)
            by_name: dict[str, list[int]] = {}
            for r in range(rows):
                name = prompts[r // m]
                if name is not None:
                    by_name.setdefault(name, []).append(r)
            self._groups[rows] = [
                (name, torch.tensor(idx, dtype=torch.long, device=device))
                for name, idx in by_name.items()
            ]
        return self._groups[rows]


class LoraLinear(nn.Linear):
    """An ``nn.Linear`` (same ``weight`` and ``bias``) plus named low-rank updates."""

    def __init__(self, base: nn.Linear, selection: Selection) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()
        self.lora_dropout = nn.ModuleDict()
        self.scales: dict[str, float] = {}
        self.selection = selection
        self.training = base.training  # an eval-mode model stays in eval mode
        self._gathered: tuple[int, int, torch.Tensor, torch.Tensor] | None = None

    def add(self, name: str, cfg: LoraConfig) -> None:
        """A fresh adapter: ``A`` as PEFT initialises it (Kaiming-uniform), ``B`` zero."""
        dev, dtype = self.weight.device, self.weight.dtype
        a = nn.Linear(self.in_features, cfg.rank, bias=False, device=dev, dtype=dtype)
        nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))
        b = nn.Linear(cfg.rank, self.out_features, bias=False, device=dev, dtype=dtype)
        nn.init.zeros_(b.weight)
        self.lora_A[name], self.lora_B[name] = a, b
        self.lora_dropout[name] = nn.Dropout(cfg.dropout) if cfg.dropout else nn.Identity()
        self.scales[name] = cfg.scale
        self._gathered = None
        self.train(self.training)  # the new modules take this layer's mode

    def drop(self, name: str) -> None:
        for bank in (self.lora_A, self.lora_B, self.lora_dropout):
            if name in bank:
                del bank[name]
        self.scales.pop(name, None)
        self._gathered = None

    def _update(self, name: str, x: torch.Tensor) -> torch.Tensor:
        a, b = self.lora_A[name], self.lora_B[name]
        return b(a(self.lora_dropout[name](x))) * self.scales[name]

    def lora_delta(self, x: torch.Tensor) -> torch.Tensor | None:
        """The adapters' share of the output for input ``x`` (B, ..., in), or None."""
        sel = self.selection
        if sel.per_prompt is None:
            if sel.active is None or sel.active not in self.scales:
                return None
            return self._update(sel.active, x)
        if not torch.is_grad_enabled():
            return self._mixed(x)
        out: torch.Tensor | None = None
        for name, rows in sel.groups(x.size(0), x.device):
            if name not in self.scales:
                continue
            if out is None:
                out = x.new_zeros(*x.shape[:-1], self.out_features)
            out.index_copy_(0, rows, self._update(name, x.index_select(0, rows)))
        return out

    def _mixed(self, x: torch.Tensor) -> torch.Tensor:
        """A mixed batch at inference: each row's ``A`` and ``B`` gathered once per selection
        (ranks padded with zeros to the largest), then two batched matmuls for all rows
        together, instead of a pass per adapter (measured in bench/write_style_eval.py)."""
        sel, rows = self.selection, x.size(0)
        g = self._gathered
        if g is None or g[0] != sel.epoch or g[1] != rows:
            names, slot = sel.slots(rows, x.device)
            names = tuple(n if n in self.scales else "" for n in names)
            rank = max([self.lora_A[n].weight.size(0) for n in names if n] or [1])
            a = x.new_zeros(len(names) + 1, self.in_features, rank)  # last: no adapter
            b = x.new_zeros(len(names) + 1, rank, self.out_features)
            for i, n in enumerate(names):
                if n:
                    r = self.lora_A[n].weight.size(0)
                    a[i, :, :r] = self.lora_A[n].weight.t()
                    b[i, :r] = self.lora_B[n].weight.t() * self.scales[n]
            self._gathered = g = (sel.epoch, rows, a[slot], b[slot])
        flat = x.reshape(rows, -1, self.in_features)
        return torch.bmm(torch.bmm(flat, g[2]), g[3]).view(*x.shape[:-1], self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        delta = self.lora_delta(x)
        return out if delta is None else out + delta


def _matches(name: str, targets: tuple[str, ...]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def lora_modules(model: nn.Module) -> dict[str, LoraLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoraLinear)}


def _selection(model: nn.Module) -> Selection:
    sel = getattr(model, "_lora_selection", None)
    if sel is None:
        sel = Selection()
        model._lora_selection = sel  # type: ignore[assignment]
    return sel


def add_adapter(model: nn.Module, name: str, cfg: LoraConfig) -> list[str]:
    """Give ``model`` a fresh adapter ``name`` on every module ``cfg.targets`` names (wrapping
    those ``nn.Linear`` in :class:`LoraLinear` the first time); returns the adapted module
    names. Raises ConfigError when no module matches or the name is taken."""
    if not name.isidentifier():
        raise ConfigError(f"adapter name {name!r}: expected letters, digits and _ (no dots)")
    sel = _selection(model)
    found = []
    for mod_name, module in list(model.named_modules()):
        if not _matches(mod_name, cfg.targets):
            continue
        if not isinstance(module, nn.Linear):
            raise ConfigError(
                f"lora target {mod_name!r} is a {type(module).__name__}, not a linear layer"
            )
        if not isinstance(module, LoraLinear):
            parent_name, _, attr = mod_name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            module = LoraLinear(module, sel)
            setattr(parent, attr, module)
        if name in module.scales:
            raise ConfigError(f"the model already has an adapter named {name!r}")
        module.add(name, cfg)
        found.append(mod_name)
    if not found:
        raise ConfigError(f"no module of the model matches lora targets {list(cfg.targets)}")
    return found


def remove_adapter(model: nn.Module, name: str) -> None:
    for module in lora_modules(model).values():
        module.drop(name)


def adapter_names(model: nn.Module) -> set[str]:
    return {n for m in lora_modules(model).values() for n in m.scales}


def train_only(model: nn.Module, name: str) -> int:
    """Freeze everything but adapter ``name``'s ``A`` and ``B``; returns how many parameters
    train. Selects the adapter for the whole batch (training runs one adapter)."""
    for p in model.parameters():
        p.requires_grad_(False)
    n = 0
    for module in lora_modules(model).values():
        if name in module.scales:
            for p in (*module.lora_A[name].parameters(), *module.lora_B[name].parameters()):
                p.requires_grad_(True)
                n += p.numel()
    select(model, name)
    return n


def select(model: nn.Module, name: str | None) -> None:
    """Apply adapter ``name`` to every row from now on (None: the base model alone)."""
    _selection(model).set(name, None)


@contextmanager
def use(model: nn.Module, adapters: str | list[str | None] | None) -> Iterator[None]:
    """Within the block, apply one adapter (a name, or None for the base) to every row, or
    one per prompt (a list). The previous selection comes back after. Callers serialise
    forwards on one model (the server runs each model in its own thread)."""
    sel = _selection(model)
    before = (sel.active, sel.per_prompt)
    if isinstance(adapters, list):
        if len(set(adapters)) == 1:  # one adapter for all: the plain path
            sel.set(adapters[0], None)
        else:
            sel.set(None, list(adapters))
    else:
        sel.set(adapters, None)
    try:
        yield
    finally:
        sel.set(*before)


def adapter_state(model: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """Adapter ``name``'s tensors under PEFT's keys."""
    state = {}
    for mod_name, module in lora_modules(model).items():
        if name in module.scales:
            state[f"{PREFIX}{mod_name}.lora_A.weight"] = module.lora_A[name].weight
            state[f"{PREFIX}{mod_name}.lora_B.weight"] = module.lora_B[name].weight
    if not state:
        raise ConfigError(f"the model has no adapter named {name!r}")
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def load_adapter_state(
    model: nn.Module, name: str, state: dict[str, torch.Tensor], where: str
) -> None:
    """Copy PEFT-keyed tensors into adapter ``name`` (which must exist with the same shapes):
    every key must find its module and every adapted module must get both its tensors."""
    modules = lora_modules(model)
    expected = set()
    for mod_name, module in modules.items():
        if name in module.scales:
            expected |= {f"{PREFIX}{mod_name}.lora_A.weight", f"{PREFIX}{mod_name}.lora_B.weight"}
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: adapter tensors do not fit the model (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]})"
        )
    with torch.no_grad():
        for key, tensor in state.items():
            mod_name, _, rest = key.removeprefix(PREFIX).rpartition(".lora_")
            bank = modules[mod_name].lora_A if rest.startswith("A") else modules[mod_name].lora_B
            target = bank[name].weight
            if target.shape != tensor.shape:
                raise CheckpointError(
                    f"{where}: {key} has shape {tuple(tensor.shape)}, the model expects "
                    f"{tuple(target.shape)} (another base model or rank?)"
                )
            target.copy_(tensor)


def write_adapter(
    directory: Path,
    model: nn.Module,
    name: str,
    cfg: LoraConfig,
    base: str = "",
    extra: dict[str, Any] | None = None,
) -> None:
    """Write adapter ``name``'s files into the existing ``directory`` (a checkpoint being
    assembled); :func:`save_adapter` is the atomic whole."""
    state = adapter_state(model, name)
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt", "base": base})
    (directory / CONFIG_FILE).write_text(json.dumps(cfg.peft_json(base), indent=2) + "\n")
    if extra is not None:
        (directory / INFO_FILE).write_text(
            json.dumps(extra, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
        )


def save_adapter(
    directory: str | Path,
    model: nn.Module,
    name: str,
    cfg: LoraConfig,
    base: str = "",
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write adapter ``name`` as a PEFT adapter directory, atomically. ``base`` names the base
    model (kept in the config and the file's metadata); ``extra`` goes into ``llmos.json``."""
    return atomic_directory(
        Path(directory), lambda tmp: write_adapter(tmp, model, name, cfg, base, extra)
    )


def read_info(directory: str | Path) -> dict[str, Any]:
    """``llmos.json`` of an adapter directory (what llmos recorded: base digest, metrics), or
    {} for an adapter from elsewhere."""
    path = Path(directory) / INFO_FILE
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: not a JSON object ({e})") from e


def read_adapter(directory: str | Path) -> tuple[LoraConfig, dict[str, torch.Tensor]]:
    """An adapter directory's config and tensors (safetensors only: nothing is unpickled)."""
    directory = Path(directory)
    cfg_path, weights = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    if not cfg_path.is_file() or not weights.is_file():
        raise CheckpointError(
            f"{directory}: not an adapter (expected {CONFIG_FILE} and {WEIGHTS_FILE})"
        )
    try:
        data = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from e
    return LoraConfig.from_peft_json(data, str(cfg_path)), load_file(str(weights))


def load_adapter(model: nn.Module, directory: str | Path, name: str) -> LoraConfig:
    """Add the adapter saved in ``directory`` to ``model`` under ``name`` (replacing one of
    that name)."""
    cfg, state = read_adapter(directory)
    if name in adapter_names(model):
        remove_adapter(model, name)
    add_adapter(model, name, cfg)
    try:
        load_adapter_state(model, name, state, str(directory))
    except CheckpointError:
        remove_adapter(model, name)
        raise
    return cfg


def adapter_parameters(model: nn.Module, name: str) -> int:
    return sum(t.numel() for t in adapter_state(model, name).values())


def config_dict(cfg: LoraConfig) -> dict[str, Any]:
    return {**asdict(cfg), "targets": list(cfg.targets)}
