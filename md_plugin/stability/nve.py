"""NVE (microcanonical) molecular dynamics with ASE's velocity Verlet, recording every frame.

Units: ASE units internally (eV, Å, fs via ``ase.units.fs``); the recorded arrays are in
eV (energies), Å (positions), K (temperature) and fs (time).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator

#: a zero-argument callable returning a fresh ASE calculator (used so that stock and patched
#: runs get their own calculator instances, and so that tests can inject any calculator).
CalculatorFactory = Callable[[], Calculator]

#: runs of at least this many steps show a tqdm progress bar unless told otherwise.
PROGRESS_MIN_STEPS = 1000

#: untimed velocity-Verlet steps on a throw-away copy before each timed run (see :func:`run_nve`).
DEFAULT_WARMUP_STEPS = 10


@dataclass
class NVEResult:
    """Everything recorded during one NVE run.

    Energies are recorded at every step (they are free: the calculator has them after the force call);
    positions are kept, and trajectory frames written, every ``record_interval`` steps.

    Attributes:
        label: run name (``"stock"``, ``"patched"``, ...).
        n_atoms: number of atoms.
        timestep_fs: integration time step (fs).
        steps: number of MD steps integrated.
        record_interval: positions/trajectory frames every ``record_interval`` steps (plus step 0 and the last).
        step: (S,) step index of each energy sample, ``0 .. steps``.
        time_fs: (S,) simulation time of each energy sample (fs).
        epot_eV: (S,) potential energy (eV, whole system).
        ekin_eV: (S,) kinetic energy (eV, whole system).
        temperature_K: (S,) instantaneous temperature, 2 E_kin / (3 N k_B) (K).
        frame_step: (F,) step index of each recorded position frame.
        positions_A: (F, N, 3) unwrapped Cartesian positions (Å) at ``frame_step``.
        wall_s: wall time of the integration loop, excluding the initial force call (s).
        record_s: part of ``wall_s`` spent recording and writing the trajectory (s).
        trajectory: path of the ASE ``.traj`` file, if one was written.
        extra: calculator facts for the report (class, SH backend).
    """

    label: str
    n_atoms: int
    timestep_fs: float
    steps: int
    record_interval: int
    step: np.ndarray
    time_fs: np.ndarray
    epot_eV: np.ndarray
    ekin_eV: np.ndarray
    temperature_K: np.ndarray
    frame_step: np.ndarray
    positions_A: np.ndarray
    wall_s: float
    record_s: float
    trajectory: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def etot_eV(self) -> np.ndarray:
        """(S,) total energy E_pot + E_kin (eV)."""
        return self.epot_eV + self.ekin_eV

    @property
    def frame_time_fs(self) -> np.ndarray:
        """(F,) simulation time of each position frame (fs)."""
        return self.frame_step * self.timestep_fs

    @property
    def md_s(self) -> float:
        """Wall time of the integration alone (force calls + Verlet updates), excluding recording (s)."""
        return max(self.wall_s - self.record_s, 0.0)

    def write_energy_csv(self, path: str | Path) -> Path:
        """Write the per-step energies as CSV: ``step,time_fs,epot_eV,ekin_eV,etot_eV,temperature_K`` (17 digits)."""
        path = Path(path)
        table = np.column_stack([self.step, self.time_fs, self.epot_eV, self.ekin_eV, self.etot_eV, self.temperature_K])
        np.savetxt(
            path,
            table,
            delimiter=",",
            header="step,time_fs,epot_eV,ekin_eV,etot_eV,temperature_K",
            comments="",
            fmt=["%d", "%.6f", "%.17g", "%.17g", "%.17g", "%.17g"],
        )
        return path


def initialize_velocities(atoms: Atoms, temperature_K: float, seed: int) -> None:
    """Draw Maxwell–Boltzmann velocities in place, deterministic for a given ``seed``.

    The total momentum is removed (``Stationary``); for a non-periodic system the total angular
    momentum is removed too (``ZeroRotation``). Velocities are then rescaled so that the instantaneous
    temperature, 2 E_kin / (3 N k_B), is exactly ``temperature_K`` (K), unless it is 0.
    """
    from ase.md import velocitydistribution as vd

    if temperature_K < 0:
        raise ValueError(f"temperature must be >= 0 K, got {temperature_K}")
    if temperature_K == 0:
        atoms.set_momenta(np.zeros((len(atoms), 3)))
        return
    rng = np.random.default_rng(seed)
    if hasattr(vd, "thermalize_momenta"):  # ASE >= 3.29
        vd.thermalize_momenta(atoms, temperature_K, rng=rng)
    else:  # pragma: no cover - older ASE, same distribution
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    vd.Stationary(atoms)
    if not any(atoms.pbc) and len(atoms) > 2:
        vd.ZeroRotation(atoms)
    t_now = instantaneous_temperature(atoms.get_kinetic_energy(), len(atoms))
    if t_now > 0:
        atoms.set_momenta(atoms.get_momenta() * np.sqrt(temperature_K / t_now))


def instantaneous_temperature(ekin_eV: np.ndarray | float, n_atoms: int) -> np.ndarray | float:
    """Temperature 2 E_kin / (3 N k_B) in K from kinetic energy in eV (3N degrees of freedom, as ASE)."""
    return 2.0 * np.asarray(ekin_eV) / (3.0 * n_atoms * units.kB)


def calculator_info(calc: Calculator) -> dict:
    """Report-worthy facts about a calculator: class name and, for EquiTriton calculators, the SH backend."""
    info: dict = {"calculator": type(calc).__name__}
    backend = getattr(calc, "sh_backend", None)
    if backend is not None:
        info["sh_backend"] = str(backend)
    return info


class _Integration:
    """One NVE integration, set up (warm-up done, first force call made) and advanced one step at a time, so that
    several can run in lockstep (:func:`run_nve_lockstep`). ``wall_s`` sums the time of this run's own steps."""

    def __init__(
        self,
        atoms: Atoms,
        calculator_factory: CalculatorFactory,
        steps: int,
        timestep_fs: float,
        label: str,
        trajectory: str | Path | None,
        record_interval: int,
        progress: bool | None,
        warmup_steps: int,
    ) -> None:
        from ase.io.trajectory import Trajectory
        from ase.md.verlet import VelocityVerlet

        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if record_interval < 1:
            raise ValueError(f"record_interval must be >= 1, got {record_interval}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        calc = calculator_factory()
        if warmup_steps:
            scratch = atoms.copy()
            scratch.set_momenta(atoms.get_momenta())
            scratch.calc = calc
            VelocityVerlet(scratch, timestep=timestep_fs * units.fs).run(warmup_steps)
            calc.reset()
        self.work = work = atoms.copy()
        work.set_momenta(atoms.get_momenta())
        work.calc = calc
        self.label, self.steps, self.timestep_fs = label, steps, timestep_fs
        self.record_interval, self.trajectory = record_interval, trajectory
        # initial force/energy call outside the timed region (without warm-up steps it absorbs the one-off costs:
        # kernel compilation, neighbour-list set-up, CUDA context)
        work.get_forces()
        self.dyn = dyn = VelocityVerlet(work, timestep=timestep_fs * units.fs)
        self.epot = np.empty(steps + 1)
        self.ekin = np.empty(steps + 1)
        self.frame_step: list[int] = []
        self.frame_pos: list[np.ndarray] = []
        self.traj = Trajectory(str(trajectory), "w", work) if trajectory is not None else None
        self.record_s = 0.0
        self.wall_s = 0.0
        show = (steps >= PROGRESS_MIN_STEPS) if progress is None else progress
        self.bar = None
        if show:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=steps, desc=f"NVE {label}", unit="step", leave=False, mininterval=1.0)
        dyn.attach(self._observe, interval=1)
        # ASE's generator form of run(): the first next() records step 0, each later one makes one step
        self._steps = dyn.irun(steps)

    def _observe(self) -> None:
        t0 = time.perf_counter()
        k = self.dyn.nsteps
        # energies of the current positions: cached by the calculator after the step's force call
        self.epot[k] = self.work.get_potential_energy()
        self.ekin[k] = self.work.get_kinetic_energy()
        if k % self.record_interval == 0 or k == self.steps:
            self.frame_step.append(k)
            self.frame_pos.append(self.work.get_positions())
            if self.traj is not None:
                self.traj.write()
        if self.bar is not None and k > 0:
            self.bar.update(1)
        self.record_s += time.perf_counter() - t0

    def advance(self) -> None:
        """Step 0's record on the first call, then one velocity-Verlet step (with its record) per call."""
        t0 = time.perf_counter()
        next(self._steps)
        self.wall_s += time.perf_counter() - t0

    def close(self) -> None:
        if self.traj is not None:
            self.traj.close()
        if self.bar is not None:
            self.bar.close()

    def result(self) -> NVEResult:
        step = np.arange(self.steps + 1, dtype=np.int64)
        return NVEResult(
            label=self.label,
            n_atoms=len(self.work),
            timestep_fs=float(self.timestep_fs),
            steps=int(self.steps),
            record_interval=int(self.record_interval),
            step=step,
            time_fs=step * float(self.timestep_fs),
            epot_eV=self.epot,
            ekin_eV=self.ekin,
            temperature_K=np.asarray(instantaneous_temperature(self.ekin, len(self.work))),
            frame_step=np.asarray(self.frame_step, dtype=np.int64),
            positions_A=np.asarray(self.frame_pos, dtype=np.float64),
            wall_s=self.wall_s,
            record_s=self.record_s,
            trajectory=str(self.trajectory) if self.trajectory is not None else None,
            extra=calculator_info(self.work.calc),
        )


def run_nve(
    atoms: Atoms,
    calculator_factory: CalculatorFactory,
    steps: int,
    timestep_fs: float,
    *,
    label: str = "run",
    trajectory: str | Path | None = None,
    record_interval: int = 1,
    progress: bool | None = None,
    warmup_steps: int = DEFAULT_WARMUP_STEPS,
) -> NVEResult:
    """Integrate NVE dynamics from the given positions and momenta (not modified: a copy is integrated).

    Args:
        atoms: starting structure with momenta already set (see :func:`initialize_velocities`).
        calculator_factory: zero-argument callable returning the ASE calculator to use.
        steps: number of velocity-Verlet steps.
        timestep_fs: time step in fs.
        label: name of the run, stored in the result.
        trajectory: if given, an ASE ``.traj`` file written at every position frame (positions, momenta,
            energy, forces).
        record_interval: keep positions and write a trajectory frame every this many steps (step 0 and the last
            step always); energies are recorded at every step regardless.
        progress: show a tqdm progress bar (``None``: only when ``steps >= PROGRESS_MIN_STEPS``).
        warmup_steps: before the timed run, integrate this many steps of a throw-away copy with the same calculator,
            so that one-off costs (kernel compilation, allocator growth, TorchScript profiling runs) do not land in
            the first timed steps. The recorded trajectory still starts from ``atoms``.

    Returns:
        The :class:`NVEResult`.
    """
    return run_nve_lockstep(
        atoms,
        {label: calculator_factory},
        steps,
        timestep_fs,
        trajectories={label: trajectory},
        record_interval=record_interval,
        progress=progress,
        warmup_steps=warmup_steps,
    )[label]


def run_nve_lockstep(
    atoms: Atoms,
    factories: dict[str, CalculatorFactory],
    steps: int,
    timestep_fs: float,
    *,
    trajectories: dict[str, str | Path | None] | None = None,
    record_interval: int = 1,
    progress: bool | None = None,
    warmup_steps: int = DEFAULT_WARMUP_STEPS,
) -> dict[str, NVEResult]:
    """:func:`run_nve` for several calculators from the same start, integrated in lockstep: every run makes its step
    k before any run makes step k + 1, in ABBA order (the order reverses every step). Each run's trajectory is what
    it would be alone (the runs share nothing); its ``wall_s`` sums its own steps, so a drift of the machine during
    the study reaches every run alike and their speed ratio compares the calculators."""
    trajectories = trajectories or {}
    runs = []
    try:
        for label, factory in factories.items():
            runs.append(
                _Integration(
                    atoms,
                    factory,
                    steps,
                    timestep_fs,
                    label,
                    trajectories.get(label),
                    record_interval,
                    progress,
                    warmup_steps,
                )
            )
        for k in range(steps + 1):
            for run in runs if k % 2 == 0 else reversed(runs):
                run.advance()
    finally:
        for run in runs:
            run.close()
    return {run.label: run.result() for run in runs}
