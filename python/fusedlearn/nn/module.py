"""``Module``: the base class of layers and containers, with an explicit backward.

A module caches in ``forward(x)`` what its backward needs; ``backward(grad_out)``
adds the parameter gradients into ``param.grad`` (allocating it on first use)
and returns the gradient with respect to the input.  Containers compose both.
Parameter and sub-module names follow ``torch.nn`` (``"0.weight"``,
``"block.1.bias"``), so a torch ``state_dict`` converted to numpy loads.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterator, NamedTuple

import numpy as np

from .parameter import Parameter


class StateDictError(RuntimeError, ValueError):
    """A state dict that does not fit the module (missing / unexpected keys, shape mismatch).

    A ``RuntimeError`` as in torch, and a ``ValueError`` since it is a bad argument."""


class IncompatibleKeys(NamedTuple):
    missing_keys: list
    unexpected_keys: list


def _to_numpy(value, name: str) -> np.ndarray:
    """A numpy view or copy of a state-dict entry (numpy array, torch tensor, nested list, scalar)."""
    if isinstance(value, Parameter):
        return value.data
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        return value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except Exception as exc:  # pragma: no cover - defensive
        raise TypeError(f"state dict entry {name!r} is not an array ({type(value).__name__})") from exc


def as_float_input(x, who: str) -> np.ndarray:
    """``x`` as a floating-point numpy array; TypeError naming ``who`` for anything else."""
    if not isinstance(x, np.ndarray):
        if hasattr(x, "detach") and hasattr(x, "cpu"):
            x = x.detach().cpu().numpy()
        else:
            x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"{who}: input must be a floating-point array, got dtype {x.dtype} "
                        "(convert it, e.g. x.astype(np.float32))")
    return x


class Module:
    """Base class of every layer and container.

    Subclasses call ``super().__init__()`` first, assign ``Parameter`` and
    ``Module`` attributes (they are registered in order, as in torch), and
    implement ``forward(x)`` and ``backward(grad_out)``.
    """

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # ---- registration ---------------------------------------------------------------
    def __setattr__(self, name: str, value) -> None:
        params = self.__dict__.get("_parameters")
        if params is None:
            raise AttributeError(f"cannot assign {name!r} before Module.__init__() was called")
        modules = self.__dict__["_modules"]
        buffers = self.__dict__["_buffers"]
        if isinstance(value, Parameter):
            modules.pop(name, None)
            buffers.pop(name, None)
            params[name] = value
        elif isinstance(value, Module):
            params.pop(name, None)
            buffers.pop(name, None)
            modules[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as parameter {name!r} "
                                "(a fusedlearn.nn.Parameter or None is required)")
            params[name] = None
        elif name in modules:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as child module {name!r}")
            modules[name] = None
        elif name in buffers:
            buffers[name] = None if value is None else np.asarray(value)
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        for d in ("_parameters", "_modules", "_buffers"):
            self.__dict__[d].pop(name, None)
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param) -> None:
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter: {name!r} must be a Parameter or None")
        self._parameters[name] = param
        object.__setattr__(self, name, param)

    def register_buffer(self, name: str, value) -> None:
        """A non-trained array that belongs in the state dict (like torch's buffers)."""
        self._buffers[name] = None if value is None else np.asarray(value)
        object.__setattr__(self, name, self._buffers[name])

    def add_module(self, name: str, module) -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module: {name!r} must be a Module or None, got {type(module).__name__}")
        if "." in name or name == "":
            raise KeyError(f"module name can't contain '.' or be empty, got {name!r}")
        self._modules[name] = module
        object.__setattr__(self, name, module)

    # ---- computation ----------------------------------------------------------------
    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def backward(self, grad_out):
        raise NotImplementedError(f"{type(self).__name__} has no backward()")

    def backward_params(self, grad_out) -> None:
        """``backward(grad_out)`` for the parameter gradients only, when the input gradient is not
        wanted (the first layer of a network: torch skips it for inputs without ``requires_grad``).
        Modules that can skip computing it (``Conv2d``, ``Linear``, ``Sequential``, through
        ``InputGradOptional``) override this; the default runs ``backward`` and drops the result."""
        self.backward(grad_out)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---- traversal ------------------------------------------------------------------
    def named_children(self) -> Iterator:
        for name, m in self._modules.items():
            if m is not None:
                yield name, m

    def children(self) -> Iterator:
        for _, m in self.named_children():
            yield m

    def named_modules(self, memo=None, prefix: str = "") -> Iterator:
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, m in self.named_children():
            yield from m.named_modules(memo, f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator:
        for _, m in self.named_modules():
            yield m

    def named_parameters(self, prefix: str = "", recurse: bool = True) -> Iterator:
        """``(name, Parameter)`` pairs with torch's dotted names; each parameter once."""
        seen = set()
        mods = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for mprefix, m in mods:
            for name, p in m._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mprefix}.{name}" if mprefix else name), p

    def parameters(self, recurse: bool = True) -> Iterator:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True) -> Iterator:
        mods = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for mprefix, m in mods:
            for name, b in m._buffers.items():
                if b is not None:
                    yield (f"{mprefix}.{name}" if mprefix else name), b

    # ---- state ----------------------------------------------------------------------
    def state_dict(self, prefix: str = "", keep_vars: bool = False) -> OrderedDict:
        """Parameters and buffers by torch's names.  As in torch the arrays are the
        module's own (not copies): copy them to keep a snapshot.  ``keep_vars=True``
        gives the ``Parameter`` objects."""
        out = OrderedDict()
        for mprefix, m in self.named_modules(prefix=prefix.rstrip(".")):
            for name, p in m._parameters.items():
                if p is not None:
                    out[f"{mprefix}.{name}" if mprefix else name] = p if keep_vars else p.data
            for name, b in m._buffers.items():
                if b is not None:
                    out[f"{mprefix}.{name}" if mprefix else name] = b
        return out

    def load_state_dict(self, state_dict, strict: bool = True) -> IncompatibleKeys:
        """Copy arrays (numpy, torch tensors, ...) into the parameters and buffers in place,
        so optimizers holding the parameters keep working.  With ``strict`` missing or
        unexpected keys raise :class:`StateDictError`; shape mismatches always do."""
        targets = OrderedDict()
        for mprefix, m in self.named_modules():
            for name, p in m._parameters.items():
                if p is not None:
                    targets[f"{mprefix}.{name}" if mprefix else name] = (m, name, True)
            for name, b in m._buffers.items():
                if b is not None:
                    targets[f"{mprefix}.{name}" if mprefix else name] = (m, name, False)
        missing = [k for k in targets if k not in state_dict]
        unexpected = [k for k in state_dict if k not in targets]
        errors = []
        if strict and unexpected:
            errors.append("Unexpected key(s) in state_dict: " + ", ".join(repr(k) for k in unexpected) + ".")
        if strict and missing:
            errors.append("Missing key(s) in state_dict: " + ", ".join(repr(k) for k in missing) + ".")
        arrays = {}
        for key, (m, name, is_param) in targets.items():
            if key not in state_dict:
                continue
            value = _to_numpy(state_dict[key], key)
            current = m._parameters[name].data if is_param else m._buffers[name]
            if value.shape != current.shape:
                errors.append(f"size mismatch for {key}: copying a param with shape {value.shape} from "
                              f"checkpoint, the shape in current model is {current.shape}.")
                continue
            if is_param and value.dtype.kind not in "fiub":
                errors.append(f"{key}: cannot load dtype {value.dtype} into a floating-point parameter.")
                continue
            arrays[key] = value
        if errors:
            raise StateDictError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                                 + "\n\t".join(errors))
        for key, value in arrays.items():
            m, name, is_param = targets[key]
            if is_param:
                np.copyto(m._parameters[name].data, value, casting="unsafe")
            else:
                np.copyto(m._buffers[name], value, casting="unsafe")
        return IncompatibleKeys(missing, unexpected)

    # ---- modes and placement --------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            p.zero_grad(set_to_none)

    def to(self, device=None, dtype=None) -> "Module":
        """Move to ``device`` / cast to ``dtype``.  Only the CPU exists for modules now:
        ``"cpu"`` is accepted (a no-op), any other device raises ``ValueError``."""
        if device is not None and not (isinstance(device, (str, np.dtype, type)) or hasattr(device, "type")):
            raise TypeError(f"to(): expected a device string, got {type(device).__name__}")
        if isinstance(device, (np.dtype, type)) and dtype is None:
            device, dtype = None, device
        if device is not None:
            kind = getattr(device, "type", device)
            if str(kind).split(":")[0] != "cpu":
                raise ValueError(f"to({device!r}): fusedlearn.nn modules run on the CPU only for now "
                                 "(use 'cpu'; GPU modules are not implemented yet)")
        if dtype is not None:
            self._cast(np.dtype(dtype))
        return self

    def _cast(self, dtype: np.dtype) -> None:
        if dtype.kind != "f":
            raise TypeError(f"modules can only be cast to floating-point dtypes, got {dtype}")
        for m in self.modules():
            for p in m._parameters.values():
                if p is not None and p.data.dtype != dtype:
                    p.data = np.ascontiguousarray(p.data, dtype=dtype)
                    if p.grad is not None:
                        p.grad = np.ascontiguousarray(p.grad, dtype=dtype)
            for name, b in list(m._buffers.items()):
                if b is not None and b.dtype.kind == "f":
                    m.register_buffer(name, b.astype(dtype))

    def double(self) -> "Module":
        return self.to(dtype=np.float64)

    def float(self) -> "Module":
        return self.to(dtype=np.float32)

    def cpu(self) -> "Module":
        return self

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    # ---- printing -------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        children = list(self.named_children())
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not children:
            return head + ")"
        lines = [head]
        for name, m in children:
            body = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        return "\n".join(lines) + "\n)"


class InputGradOptional:
    """Mixin (listed before ``Module``) for modules whose backward can skip computing the input
    gradient: they implement ``_backward(grad_out, input_grad)``, and ``backward`` /
    ``backward_params`` call it with ``input_grad`` True / False."""

    def backward(self, grad_out):
        return self._backward(grad_out, True)

    def backward_params(self, grad_out) -> None:
        self._backward(grad_out, False)

