"""The Optimizer base class: torch.optim's API over the fused multi-tensor kernels.

A rule subclass says which state arrays it keeps (``_state_names``) and how one
fused kernel call updates a list of params (``_update``).  ``step()`` sorts the
params of each group that have a gradient into buckets of one (step count,
device, dtype) and calls the kernel once per bucket with whole lists.
"""
from __future__ import annotations

import copy
import sys
from collections import defaultdict
from itertools import chain

from .. import functional as F
from . import _params as P


def check_hyper(lr=None, eps=None, betas=None, weight_decay=None) -> None:
    """torch.optim's range checks, with its exact ``ValueError`` texts, for the given arguments."""
    if lr is not None and not 0.0 <= lr:
        raise ValueError(f"Invalid learning rate: {lr}")
    if eps is not None and not 0.0 <= eps:
        raise ValueError(f"Invalid epsilon value: {eps}")
    if betas is not None:
        for i in (0, 1):
            if not 0.0 <= betas[i] < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {betas[i]}")
    if weight_decay is not None and not 0.0 <= weight_decay:
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")


class Optimizer:
    """Base class of the optimizers, with ``torch.optim.Optimizer``'s API.

    ``params``: an iterable of parameters (torch tensors, ``fusedlearn.nn.Parameter``,
    ``(array, grad_array)`` pairs or ``(name, param)`` tuples) or of dicts
    ``{'params': ..., <hyperparameter>: ...}`` (parameter groups).

    ``skip_nonfinite=True`` checks every gradient before a step and skips the
    whole step when one holds an inf or NaN; ``step(found_inf=...)`` does the
    same for a flag computed elsewhere (e.g. by a loss scaler).  Skipped steps
    change neither parameters nor state and are counted in ``skipped_steps``.

    The torch-only keywords ``foreach``, ``fused``, ``capturable`` and
    ``differentiable`` are accepted and kept in the groups (so torch state
    dicts load both ways) but change nothing: every step is fused already.
    """

    _has_step = True  # keeps state['step']
    _step_dependent = True  # the update depends on the step count (bucket by it)
    # Per-param scalar state (torch keeps 0-d tensors, e.g. NAdam's mu_product):
    # Python floats while training, exported in torch's form, loaded as floats.
    _scalar_state: tuple = ()

    def __init__(self, params, defaults: dict, *, skip_nonfinite: bool = False):
        self.defaults = dict(defaults)
        self.state: dict = defaultdict(dict)
        self.param_groups: list = []
        self.skip_nonfinite = bool(skip_nonfinite)
        self.skipped_steps = 0
        if P.is_torch_tensor(params) or P.is_array(params) or isinstance(params, (P.Parameter, P.ArrayPair)):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of parameters or dicts, "
                f"but got {type(params).__name__}")
        if isinstance(params, (set, frozenset)):
            raise TypeError("optimizer parameters need to be organized in ordered collections, not a set")
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # ---- rule interface -------------------------------------------------------------
    def _state_names(self, group: dict) -> list:
        """State arrays the rule keeps for a param of ``group``, in kernel order."""
        raise NotImplementedError

    def _init_value(self, group: dict, name: str) -> float:
        return 0.0

    def _update(self, group: dict, params: list, grads: list, states: dict, step: int) -> None:
        """One fused kernel call: ``states`` maps each state name to its list."""
        raise NotImplementedError

    def _param_state_names(self, group: dict, data, names: list) -> list:
        """The subset of the group's state names a param with array ``data`` keeps (all, unless a rule says)."""
        return names

    def _new_state(self, group: dict, name: str, data):
        """A new state array ``name`` for a param whose array is ``data``."""
        return P.full_like(data, self._init_value(group, name))

    def _state_shape(self, name: str, shape: tuple) -> tuple:
        """Shape of state array ``name`` of a param of ``shape`` (the param's own, unless a rule factors it)."""
        return shape

    def _kernel_step(self, state: dict, created: list) -> int:
        return P.step_count(state["step"]) + 1

    def _initial_scalars(self, group: dict) -> dict:
        """Initial values of the ``_scalar_state`` entries of a new param."""
        return {}

    def _step_scalars(self, group: dict, state: dict, step: int) -> dict:
        """Scalars the kernel call of this step needs (hashable values): params
        whose values differ go into different calls; ``_update`` finds them in
        ``states`` under their names."""
        return {}

    def _after_step(self, group: dict, state: dict, step: int, scalars: dict) -> None:
        """Update a param's scalar state after its kernel call of ``step``."""

    def _check_group(self, group: dict) -> None:
        """Validate a group's hyperparameters: the kernel checks them even for empty lists."""
        states = {n: [] for n in self._state_names(group)}
        states.update(self._step_scalars(group, dict(self._initial_scalars(group), step=0.0), 1))
        self._update(group, [], [], states, 1)

    # ---- groups ---------------------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        group = dict(param_group)
        params = group.get("params")
        if params is None:
            raise ValueError("param_group must have a 'params' entry")
        if P.is_torch_tensor(params) or isinstance(params, (P.Parameter, P.ArrayPair)):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError("optimizer parameters need to be organized in ordered collections, not a set")
        else:
            params = list(params)
        names = None
        if params and all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) for x in params):
            names = [x[0] for x in params]
            params = [x[1] for x in params]
        elif any(isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) for x in params):
            raise ValueError("all parameters in a group must be named, or none")
        group["params"] = [P.as_param(x) for x in params]
        if names is not None:
            group["param_names"] = names
        ids = [P.identity(p) for p in group["params"]]
        if len(set(ids)) != len(ids):
            raise ValueError("optimizer contains a parameter group with duplicate parameters")
        for name, default in self.defaults.items():
            group.setdefault(name, default)
        taken = {P.identity(p) for g in self.param_groups for p in g["params"]}
        if not taken.isdisjoint(ids):
            raise ValueError("some parameters appear in more than one parameter group")
        self._check_group(group)
        self.param_groups.append(group)

    # ---- stepping -------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Set every gradient to None, or zero it in place (``set_to_none=False``; always for pairs)."""
        for group in self.param_groups:
            for p in group["params"]:
                P.zero_grad_of(p, set_to_none)

    def step(self, closure=None, *, found_inf=None):
        """One update of every param that has a gradient; returns ``closure()``'s loss, if given.

        A truthy ``found_inf`` (bool, or 0-d array / tensor) skips the step.
        """
        loss = None
        if closure is not None:
            torch = sys.modules.get("torch")
            if torch is not None:
                with torch.enable_grad():
                    loss = closure()
            else:
                loss = closure()
        if found_inf is not None and bool(found_inf):
            self.skipped_steps += 1
            return loss
        plan = []
        for group in self.param_groups:
            items = []
            for p in group["params"]:
                g = P.grad_of(p)
                if g is not None:
                    items.append((p, P.data_of(p), g))
            plan.append((group, items))
        if self.skip_nonfinite:
            grads = [g for _, items in plan for _, _, g in items]
            if any(F.has_nonfinite(b) for b in P.buckets(grads)):
                self.skipped_steps += 1
                return loss
        for group, items in plan:
            if items:
                self._step_group(group, items)
        return loss

    def _prepare_state(self, group: dict, p, data, names=None) -> tuple:
        """The state of ``p`` with every array the group needs; and the names created now."""
        state = self.state.get(p, {})
        created = []
        if self._has_step and "step" not in state:
            state["step"] = P.scalar_step(0, data)
            created.append("step")
        for name, value in self._initial_scalars(group).items():
            if name not in state:
                state[name] = float(value)
                created.append(name)
        for name in self._state_names(group) if names is None else names:
            if name not in state or state[name] is None:
                state[name] = self._new_state(group, name, data)
                created.append(name)
        if state:
            self.state[p] = state
        return state, created

    def _step_group(self, group: dict, items: list) -> None:
        names = self._state_names(group)
        fresh: dict = {}  # param -> state names created this step (undone if a kernel fails)
        bins: dict = {}
        try:
            for p, data, grad in items:
                state, created = self._prepare_state(group, p, data, self._param_state_names(group, data, names))
                if created:
                    fresh[p] = created
                step = self._kernel_step(state, created)
                scalars = self._step_scalars(group, state, step)
                key = (step if self._step_dependent else 0, *P.kind_of(data), tuple(sorted(scalars.items())))
                b = bins.setdefault(key, {"p": [], "data": [], "grad": [], "step": step, "scalars": scalars})
                b["p"].append(p)
                b["data"].append(data)
                b["grad"].append(grad)
            for b in bins.values():
                states = {n: [self.state[p].get(n) for p in b["p"]] for n in names}
                states.update(b["scalars"])
                self._update(group, b["data"], b["grad"], states, b["step"])
                for p in b["p"]:
                    fresh.pop(p, None)
                    self._after_step(group, self.state[p], b["step"], b["scalars"])
                    if self._has_step:
                        P.bump_step(self.state[p])
        except BaseException:
            for p, created in fresh.items():
                state = self.state.get(p, {})
                for n in created:
                    state.pop(n, None)
                if not state:
                    self.state.pop(p, None)
            raise

    # ---- checkpoints ----------------------------------------------------------------
    def state_dict(self) -> dict:
        """torch's format: ``{'state': {index: {...}}, 'param_groups': [{..., 'params': [indices]}]}``.

        Like torch, the state arrays are the optimizer's own (not copies).
        """
        index: dict = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            for p in group["params"]:
                index.setdefault(id(p), len(index))
            packed["params"] = [index[id(p)] for p in group["params"]]
            groups.append(packed)
        state = {}
        for p, s in self.state.items():
            if id(p) in index and s:
                entry = dict(s)
                for k in ("step", *self._scalar_state):
                    if k in entry:
                        entry[k] = P.exported_step(entry[k], P.data_of(p))
                state[index[id(p)]] = entry
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state dict of this class or of the matching ``torch.optim`` class.

        State arrays are copied (cast to each param's array type, device and
        dtype); hyperparameters come from the saved groups.
        """
        saved_groups = copy.deepcopy(state_dict["param_groups"])
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        for ours, saved in zip(self.param_groups, saved_groups):
            if len(ours["params"]) != len(saved["params"]):
                raise ValueError(
                    "loaded state dict contains a parameter group that doesn't match the size of optimizer's group")
        by_index = dict(zip(chain.from_iterable(g["params"] for g in saved_groups),
                            chain.from_iterable(g["params"] for g in self.param_groups)))
        new_state: dict = defaultdict(dict)
        for idx, saved in state_dict["state"].items():
            p = by_index.get(idx)
            if p is None:
                continue
            data = P.data_of(p)
            entry = {}
            for k, v in saved.items():
                if v is None:
                    continue
                if k == "step":
                    entry[k] = P.scalar_step(float(v), data)
                elif k in self._scalar_state:
                    entry[k] = float(v)
                elif P.is_array(v):
                    want = self._state_shape(k, tuple(data.shape))
                    if tuple(v.shape) != want:
                        raise ValueError(f"loaded state '{k}' of param {idx} has shape {tuple(v.shape)}, "
                                         f"expected {want}")
                    entry[k] = P.copy_like(v, data)
                else:
                    entry[k] = copy.deepcopy(v)
            if entry:
                new_state[p] = entry
        new_groups = []
        for ours, saved in zip(self.param_groups, saved_groups):
            group = dict(saved)
            group["params"] = ours["params"]
            if "param_names" in ours:
                group["param_names"] = ours["param_names"]
            else:
                group.pop("param_names", None)
            for name, default in self.defaults.items():
                group.setdefault(name, default)
            self._check_group(group)
            new_groups.append(group)
        self.state = new_state
        self.param_groups = new_groups

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(k for k in group if k not in ("params", "param_names")):
                lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)

