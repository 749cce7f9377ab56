"""BitNet's arithmetic-energy estimate (arXiv 2310.11453, Section 2.3 'Computational efficiency',
Tables 1 and 2), as a function of a model's shape.

- Table 2: the energy of one ADD and one MUL (pJ) at 45nm (Horowitz 2014) and 7nm (Zhang et al.
  2022) for FP32, FP16 and INT8 operands (`OP_ENERGY_PJ`);
- a full-precision matrix multiplication of an m x n by an n x p matrix costs
  E_add = m (n - 1) p * e_add and E_mul = m n p * e_mul;
- BitNet's 1-bit weights turn the multiply-accumulates of a BitLinear into additions of 8-bit
  activations, E_add = m (n - 1) p * e_add(INT8), and leave only the rescaling of its output by
  beta and gamma / Q_b: E_mul = (m p + m n) * e_mul;
- the attention's own products (Q K^T and the weighted sum of V, per layer) are not BitLinear and
  keep the high precision (FP16 for BitNet).

`table_1(...)` evaluates this for the paper's models at input length 512, the setting of Table 1.
The precisions of the attention products and of BitNet's rescaling (FP16) are our reading: it is
the one that reproduces Table 1's FP16, FP32 and BitNet MUL columns to the printed two decimals
(tests/test_bitnet.py), while BitNet's 7nm ADD column comes out 0.005-0.006 J below the printed
values (6.7B: 0.034 J against 0.04 J; 30B: 0.135 J against 0.14 J).
"""

from __future__ import annotations

from dataclasses import dataclass

# Table 2: energy per operation in pJ, [node][precision] = (ADD, MUL)
OP_ENERGY_PJ: dict[str, dict[str, tuple[float, float]]] = {
    "45nm": {"fp32": (0.9, 3.7), "fp16": (0.4, 1.1), "int8": (0.03, 0.2)},
    "7nm": {"fp32": (0.38, 1.31), "fp16": (0.16, 0.34), "int8": (0.007, 0.07)},
}


@dataclass(frozen=True)
class Shape:
    """A decoder's shape, as the paper's Table 5 lists its models."""

    n_layer: int
    d_model: int
    n_head: int
    d_ff: int = 0   # 0: 4 * d_model

    @property
    def ffn(self) -> int:
        return self.d_ff or 4 * self.d_model

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of every projection of one block: W_Q, W_K, W_V, W_O, then the FFN's two."""
        d, f = self.d_model, self.ffn
        return [(d, d)] * 4 + [(d, f), (f, d)]


# The paper's models (Table 5, scaling experiments), by their names in Tables 1 and 5.
PAPER_MODELS: dict[str, Shape] = {
    "125M": Shape(12, 768, 12),
    "350M": Shape(24, 1024, 16),
    "760M": Shape(24, 1536, 16),
    "1.3B": Shape(24, 2048, 32),
    "2.7B": Shape(32, 2560, 32),
    "6.7B": Shape(32, 4096, 32),
    "13B": Shape(40, 5120, 40),
    "30B": Shape(48, 7168, 56),
}
TABLE_1_MODELS = ("6.7B", "13B", "30B")
SEQ_LEN = 512   # Table 1's input length


def matmul_ops(m: int, n: int, p: int) -> tuple[int, int]:
    """(additions, multiplications) of an (m x n) @ (n x p) product: m (n - 1) p and m n p."""
    return m * (n - 1) * p, m * n * p


def operation_counts(shape: Shape, seq_len: int = SEQ_LEN) -> dict[str, int]:
    """Operations of one forward pass over `seq_len` tokens: the projections' (the BitLinear
    layers of BitNet), the attention products' (Q K^T and A V over all heads, full length), and
    the projections' output and input sizes (m p + m n, what BitNet multiplies by its scales)."""
    proj_add = proj_mul = rescale = 0
    for n_in, n_out in shape.linear_shapes():
        a, m_ = matmul_ops(seq_len, n_in, n_out)
        proj_add, proj_mul, rescale = proj_add + a, proj_mul + m_, rescale + seq_len * n_out + seq_len * n_in
    head = shape.d_model // shape.n_head
    att_add = att_mul = 0
    for m, n, p in ((seq_len, head, seq_len), (seq_len, seq_len, head)):   # Q K^T, then A V, per head
        a, m_ = matmul_ops(m, n, p)
        att_add, att_mul = att_add + a * shape.n_head, att_mul + m_ * shape.n_head
    n = shape.n_layer
    return {"proj_add": n * proj_add, "proj_mul": n * proj_mul, "rescale_mul": n * rescale,
            "attn_add": n * att_add, "attn_mul": n * att_mul}


def matmul_energy(shape: Shape, weight_bits: int, node: str, seq_len: int = SEQ_LEN) -> dict[str, float]:
    """{'add': J, 'mul': J} of the matrix multiplications of one forward pass: a full-precision
    Transformer (weight_bits 32 or 16, everything at that precision) or BitNet (weight_bits 1:
    INT8 additions in the BitLinear layers, FP16 rescaling and attention products)."""
    table = OP_ENERGY_PJ[node]
    ops = operation_counts(shape, seq_len)
    if weight_bits in (32, 16):
        add, mul = table[f"fp{weight_bits}"]
        e_add = (ops["proj_add"] + ops["attn_add"]) * add
        e_mul = (ops["proj_mul"] + ops["attn_mul"]) * mul
    elif weight_bits == 1:
        e_add = ops["proj_add"] * table["int8"][0] + ops["attn_add"] * table["fp16"][0]
        e_mul = ops["rescale_mul"] * table["fp16"][1] + ops["attn_mul"] * table["fp16"][1]
    else:
        raise ValueError(f"weight_bits={weight_bits}: Table 1 has 32, 16 (Transformer) and 1 (BitNet)")
    return {"add": e_add * 1e-12, "mul": e_mul * 1e-12}


def table_1(models: tuple[str, ...] = TABLE_1_MODELS, seq_len: int = SEQ_LEN) -> dict[str, float]:
    """Table 1 as metrics: `energy_<op>_<node>_<fp32|fp16|bitnet>_<model>` in joules."""
    out = {}
    for model in models:
        for bits, name in ((32, "fp32"), (16, "fp16"), (1, "bitnet")):
            for node in ("7nm", "45nm"):
                for op, joules in matmul_energy(PAPER_MODELS[model], bits, node, seq_len).items():
                    out[f"energy_{op}_{node}_{name}_{model}"] = joules
    return out
