"""Frame image ops of the hot path, each in two twins with one signature.

`cpu` holds the OpenCV/numpy versions the CPU pipeline runs; `cuda` holds Numba CUDA
kernels that do the same on device arrays, launched on the calling stage's stream, for the
GPU path (a frame uploaded once, letterboxed, cropped, pasted back on the device). CI runs
every kernel under Numba's CUDA simulator and checks it against its CPU twin.

Knows no faces and no models: plain arrays and affine matrices in, arrays out.
May import numpy, OpenCV and numba (the `cuda` module only); nothing from streamswap but
`errors`.
"""
