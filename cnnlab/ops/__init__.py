"""Operations from first principles: conv arithmetic, conv as loops and matmuls, receptive fields, FLOPs, classic kernels, shifts."""
