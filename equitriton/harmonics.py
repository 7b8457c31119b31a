"""The public, e3nn-compatible API: `spherical_harmonics` and the `SphericalHarmonics` module.

Signatures, output shapes and argument errors follow `e3nn.o3.spherical_harmonics` /
`e3nn.o3.SphericalHarmonics`; the work runs in the `equitriton::sh_*` custom ops.
"""

import functools
from typing import Any, List, Tuple, Union

import torch
from e3nn.o3 import Irreps
from torch import Tensor

from . import (
    ops,  # registers torch.ops.equitriton.*
    transforms,  # their batching rules, and autograd under torch.func
)

LMAX = 12
# Traced (torch.compile, torch.export, make_fx: ops.traced), SH of l_max <= FUSE_LMAX (with normalize) are recorded
# as plain elementwise ops that Inductor fuses into their consumers (ops.sh_fusable); higher l_max, the custom op.
# (Until 2026-12-01 only torch.compile / torch.export were detected, so nequip's make_fx-traced compiled step
# recorded the op whatever fuse_lmax said: docs/md_performance_notes.md.) Per module:
# `SphericalHarmonics.fuse_lmax` (md_plugin.patch_model sets its own, measured, per model: md_plugin.hook).
FUSE_LMAX = 1
_NORMALIZATIONS = ("integral", "component", "norm")


def parse_ls(irreps_out: Union[int, List[int], str, Irreps], irreps_in: Any = None) -> Tuple[List[int], Irreps, Irreps]:
    """The list of l (with repeats, in output order), irreps_out and irreps_in, exactly as e3nn reads them."""
    if isinstance(irreps_out, str):
        irreps_out = Irreps(irreps_out)
    if isinstance(irreps_out, Irreps) and irreps_in is None:
        if any(l % 2 == 1 and p == 1 for _, (l, p) in irreps_out):
            irreps_in = Irreps("1e")
    irreps_in = Irreps("1o") if irreps_in is None else Irreps(irreps_in)
    if irreps_in not in (Irreps("1x1o"), Irreps("1x1e")):
        raise ValueError(
            "irreps_in for SphericalHarmonics must be either a vector (`1x1o`) or a pseudovector (`1x1e`), "
            f"not `{irreps_in}`"
        )
    input_p = irreps_in[0].ir.p
    if isinstance(irreps_out, Irreps):
        ls: List[int] = []
        for mul, (l, p) in irreps_out:
            if p != input_p**l:
                raise ValueError(
                    f"irreps_out `{irreps_out}` asks for l = {l} with parity p = {p}, inconsistent with the input "
                    f"parity {input_p}: the output parity should be p = {input_p**l}"
                )
            ls.extend([l] * mul)
    elif isinstance(irreps_out, int):
        ls = [irreps_out]
    else:
        try:
            ls = list(irreps_out)
        except TypeError:
            raise TypeError(
                "the l of spherical harmonics must be an int, a list of int, a str or an Irreps, got "
                f"{irreps_out!r} of type {type(irreps_out).__name__}"
            ) from None
    for l in ls:
        if isinstance(l, bool) or not isinstance(l, int):
            raise TypeError(f"each l must be an int, got {l!r} of type {type(l).__name__}")
        if not 0 <= l <= LMAX:
            raise ValueError(f"l = {l} is out of range: equitriton implements 0 <= l <= {LMAX}")
    if not ls:
        raise ValueError("spherical harmonics need at least one l")
    irreps = Irreps([(1, (l, input_p**l)) for l in ls]).simplify()
    return ls, irreps, irreps_in


def normalization_id(normalization: str) -> int:
    """0, 1, 2 for 'integral', 'component', 'norm'; ValueError naming the bad value otherwise."""
    if normalization == "integral":
        return 0
    if normalization == "component":
        return 1
    if normalization == "norm":
        return 2
    raise ValueError(
        "unknown normalization '" + str(normalization) + "': expected one of 'integral', 'component', 'norm'"
    )


def _check_normalization_type(normalization: Any) -> None:
    if not isinstance(normalization, str):
        raise TypeError(
            f"normalization must be a str ('integral', 'component' or 'norm'), got {normalization!r} of type "
            f"{type(normalization).__name__}"
        )


def check_device(device: torch.device) -> None:
    """ValueError naming the device unless equitriton runs there. Meta tensors (shape inference, deferred model
    initialisation) are computed by the custom ops' fake kernels, shapes only, as e3nn's ops compute them."""
    if device.type not in ("cpu", "cuda", "xpu", "meta"):
        raise ValueError(
            "equitriton runs on cuda and xpu through Triton and on cpu through its torch fallback; x is on "
            + str(device)
        )


def sh(x: Tensor, ls: List[int], normalize: bool, normalization: str, fuse_lmax: int = FUSE_LMAX) -> Tensor:
    """Validated entry to the custom op: x (..., 3) -> (..., sum(2l+1)). TorchScript-compatible. fuse_lmax: see
    FUSE_LMAX."""
    if not torch.jit.is_scripting():
        if isinstance(x, torch.fx.Proxy):  # torch.fx.symbolic_trace: no values to check, the graph records the op
            return torch.ops.equitriton.sh_forward(x, ls, normalize, normalization_id(normalization))
    if x.dim() == 0 or x.shape[-1] != 3:
        raise ValueError("spherical harmonics need x of shape (..., 3), got shape " + str(list(x.shape)))
    if x.is_complex() or not x.is_floating_point():
        raise TypeError("spherical harmonics need a real floating-point x, got dtype " + str(x.dtype))
    check_device(x.device)
    nid = normalization_id(normalization)
    if x.dtype == torch.float16 or x.dtype == torch.bfloat16:
        # computed in float32 and cast back: half precision cannot hold the high-l coefficients
        return _sh_op(x.float(), ls, normalize, nid, fuse_lmax).to(x.dtype)
    return _sh_op(x, ls, normalize, nid, fuse_lmax)


def _sh_op(x: Tensor, ls: List[int], normalize: bool, nid: int, fuse_lmax: int) -> Tensor:
    """The custom op, or in plain eager mode the same computation without the op dispatch (ops.sh_eager)."""
    if not torch.jit.is_scripting():
        if ops.eager(x):
            return ops.sh_eager(x, ls, normalize, nid)
        if transforms.active():  # torch.func: the ops' registered autograd refuses its grad transforms
            return transforms.sh_func(x, ls, normalize, nid)
        if normalize and max(ls) <= fuse_lmax and ops.traced():
            return ops.sh_fusable(x, ls, normalize, nid)  # elementwise ops Inductor fuses (see there)
    return torch.ops.equitriton.sh_forward(x, ls, normalize, nid)


class SphericalHarmonics(torch.nn.Module):
    """Drop-in for `e3nn.o3.SphericalHarmonics`, same arguments and attributes; TorchScript-able."""

    normalize: bool
    normalization: str
    fuse_lmax: int
    _ls_list: List[int]
    _lmax: int
    _is_range_lmax: bool

    def __init__(
        self,
        irreps_out: Union[int, List[int], str, Irreps],
        normalize: bool,
        normalization: str = "integral",
        irreps_in: Any = None,
    ) -> None:
        super().__init__()
        _check_normalization_type(normalization)
        normalization_id(normalization)
        ls, self.irreps_out, self.irreps_in = parse_ls(irreps_out, irreps_in)
        self.normalize = bool(normalize)
        self.normalization = normalization
        self.fuse_lmax = FUSE_LMAX  # under torch.compile / export: l_max <= this traced as fusable ops (FUSE_LMAX)
        self._ls_list = ls
        self._lmax = max(ls)
        self._is_range_lmax = ls == list(range(self._lmax + 1))

    @classmethod
    def from_e3nn(cls, module: torch.nn.Module) -> "SphericalHarmonics":
        """Ours, with the irreps, `normalize` and normalization of an e3nn `SphericalHarmonics` instance."""
        return cls(module.irreps_out, module.normalize, module.normalization, module.irreps_in)

    def forward(self, x: Tensor) -> Tensor:
        """x: (..., 3) -> (..., irreps_out.dim)."""
        return sh(x, self._ls_list, self.normalize, self.normalization, self.fuse_lmax)

    def extra_repr(self) -> str:
        return f"{self.irreps_out}, normalize={self.normalize}, normalization={self.normalization!r}"


def spherical_harmonics(
    l: Union[int, List[int], str, Irreps], x: Tensor, normalize: bool, normalization: str = "integral"
) -> Tensor:
    """Drop-in for `e3nn.o3.spherical_harmonics`: x (..., 3) -> (..., sum(2l+1))."""
    if not isinstance(x, (torch.Tensor, torch.fx.Proxy)):  # a Proxy: traced by torch.fx (see sh)
        raise TypeError(f"spherical harmonics need x as a torch.Tensor of shape (..., 3), got {type(x).__name__}")
    _check_normalization_type(normalization)
    return sh(x, _ls_of(l), normalize, normalization)


@functools.lru_cache(maxsize=256)
def _parse_cached(key: Any) -> Tuple[int, ...]:
    return tuple(parse_ls(list(key) if type(key) is tuple else key)[0])


def _ls_of(l: Any) -> List[int]:
    """parse_ls(l)[0], cached: building Irreps on every call costs ~90 us, more than a small kernel launch."""
    if torch.compiler.is_compiling():  # traced once per graph; Dynamo would warn that it skips the cache
        return parse_ls(l)[0]
    if type(l) in (list, tuple) and not all(type(v) is int for v in l):
        return parse_ls(l)[0]  # bools, floats, ...: let parse_ls name the problem (True == 1 would share a cache key)
    key = tuple(l) if type(l) is list else l
    try:
        return list(_parse_cached(key))
    except TypeError as err:
        if "unhashable" not in str(err):
            raise
        return parse_ls(l)[0]
