"""Launch configuration for the generated Triton kernels (the kernels themselves live in equitriton/generated)."""
