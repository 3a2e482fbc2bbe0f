"""The JAX backend's hand-written kernels: convolutions by patches, shift, depthwise sums,
col2im (`conv.py`) and Winograd (`winograd.py`), batch norm as matmuls (`batchnorm.py`), and
the optional oneDNN convolution's C++ source (`onednn_conv.cc`, loaded by `../onednn.py`).
The lowerings (`../lowerings/`) choose between them."""
