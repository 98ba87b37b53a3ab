"""The backends that run a net.h5: `pytorch` (the integer QANN and the batched SNN simulator) and
`lava` (the network built as Lava Processes: CPU simulation, and Loihi 2 with lava-loihi)."""
