"""The Lava backends: `runner` builds a net.h5 as Lava Processes and runs it; `procs/` holds the
QFFS Processes and their ProcessModels (a folder of their own, since Lava's compiler imports every
module beside a Process)."""
