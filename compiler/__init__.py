"""dlc's compiler: elaboration to the graph IR, the primitive table, type and shape
checking, autodiff, passes, and the public Python API (`compiler.api`)."""
