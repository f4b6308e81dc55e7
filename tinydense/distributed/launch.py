"""Starting N processes on this machine: ``tinydense train --nproc N`` runs

    mpiexec -n N python -m tinydense train ...the same options...

with the ``mpiexec`` of the MPI runtime installed beside this Python (``pip install -e
".[mpi]"`` puts MPICH's next to it), else the first one on the PATH.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path


def find_mpiexec():
    """The path of ``mpiexec``: beside this Python's executable first, then on the PATH; None if none."""
    return shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")


def mpiexec_command(nproc, argv, option="--nproc"):
    """The command that runs ``tinydense`` with the arguments ``argv`` (without ``option N``) on
    ``nproc`` processes. ValueError if no mpiexec is found or ``nproc`` is not positive."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"{option} must be a positive number of processes, got {nproc!r}")
    mpiexec = find_mpiexec()
    if mpiexec is None:
        raise ValueError(f"{option} {nproc} needs mpiexec (an MPI runtime): pip install -e \".[mpi]\"")
    rest, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            rest.append(arg)
    return [mpiexec, "-n", str(nproc), sys.executable, "-m", "tinydense", *rest]
