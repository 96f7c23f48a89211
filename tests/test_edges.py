"""Edge maps (stage2_fusion.edges): MSO's operators by hand, the magnitude variant, dtype,
no gradient, gray conversion, and the EdgeEmbedding fuse block.

Hand computations: a correlation output at (y, x) is sum_{i,j} K[i][j] * g[y+i-1][x+j-1]
(row i = 0 is the pixel row above). MSO sums its directional kernels, so the summed kernels
(MSO_KERNELS added up, entry by entry) are:
    Laplace  L = [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]]
    Sobel    S = h + v + l + r = [[-4, -2, 2], [-4, 0, 4], [-2, 2, 4]]
    Prewitt  P = h + v + l + r = [[-3, -1, 1], [-3, 0, 3], [-1, 1, 3]]
e.g. Sobel row 0: h (-1, -2, -1) + v (-1, 0, 1) + l (0, 1, 2) + r (-2, -1, 0) = (-4, -2, 2).
"""

import pytest
import torch
import torch.nn.functional as F

from common.data.augment import imagenet_normalize
from stage2_fusion.edges import MSO_KERNELS, EdgeEmbedding, edge_map, gray_from_normalized

OPS = ("laplace", "sobel", "prewitt")


def _img(rows):
    return torch.tensor(rows, dtype=torch.float32).view(1, 1, len(rows), len(rows[0]))


def _full(gray, op, mode="mso"):
    return edge_map(gray, op, mode, stride=1)[0, 0]


# ---- MSO's kernels, as PEF.py writes them ---------------------------------------------

def test_mso_kernels_are_msos():
    assert MSO_KERNELS["laplace"] == (((-1, -1, -1), (-1, 8, -1), (-1, -1, -1)),)
    assert MSO_KERNELS["sobel"] == (
        ((-1, -2, -1), (0, 0, 0), (1, 2, 1)),
        ((-1, 0, 1), (-2, 0, 2), (-1, 0, 1)),
        ((0, 1, 2), (-1, 0, 1), (-2, -1, 0)),
        ((-2, -1, 0), (-1, 0, 1), (0, 1, 2)),
    )
    assert MSO_KERNELS["prewitt"] == (
        ((-1, -1, -1), (0, 0, 0), (1, 1, 1)),
        ((-1, 0, 1), (-1, 0, 1), (-1, 0, 1)),
        ((0, 1, 1), (-1, 0, 1), (-1, -1, 0)),
        ((-1, -1, 0), (-1, 0, 1), (0, 1, 1)),
    )


# ---- mode "mso": hand computations ---------------------------------------------------------

CORNER = _img([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]])  # bright bottom-right 2x2 block


def test_mso_corner_by_hand():
    # The block covers rows/cols {2, 3}. Output (y, x) sums K over kernel rows I(y) and
    # cols J(x) that land in the block: I(0) = {}, I(1) = {2}, I(2) = {1, 2}, I(3) = {0, 1}
    # (kernel row 2 would read row 4, outside = zero padding); J the same.
    # Sobel S = [[-4, -2, 2], [-4, 0, 4], [-2, 2, 4]]:
    #   y=1: x=1 S22 = 4; x=2 S21+S22 = 2+4 = 6; x=3 S20+S21 = -2+2 = 0
    #   y=2: x=1 S12+S22 = 8; x=2 S11+S12+S21+S22 = 0+4+2+4 = 10; x=3 S10+S11+S20+S21 = -4+0-2+2 = -4
    #   y=3: x=1 S02+S12 = 2+4 = 6; x=2 S01+S02+S11+S12 = -2+2+0+4 = 4; x=3 S00+S01+S10+S11 = -10
    assert _full(CORNER, "sobel").tolist() == [[0, 0, 0, 0], [0, 4, 6, 0], [0, 8, 10, -4], [0, 6, 4, -10]]
    # Prewitt P = [[-3, -1, 1], [-3, 0, 3], [-1, 1, 3]]:
    #   y=1: 3; 1+3 = 4; -1+1 = 0.  y=2: 3+3 = 6; 0+3+1+3 = 7; -3+0-1+1 = -3.
    #   y=3: 1+3 = 4; -1+1+0+3 = 3; -3-1-3+0 = -7
    assert _full(CORNER, "prewitt").tolist() == [[0, 0, 0, 0], [0, 3, 4, 0], [0, 6, 7, -3], [0, 4, 3, -7]]
    # Laplace: y=1: -1; -2; -2.  y=2: -2; 8-1-1-1 = 5; -1+8-1-1 = 5.  y=3: -2; 5; 5
    # ((3, 3) sees only 3 bright neighbours: the rest is zero padding).
    assert _full(CORNER, "laplace").tolist() == [[0, 0, 0, 0], [0, -1, -2, -2], [0, -2, 5, 5], [0, -2, 5, 5]]


def test_mso_vertical_step_by_hand():
    # Columns 2, 3 bright. Laplace at x=1: 0 - 3 bright right neighbours = -3 (rows 0, 3 have
    # only 2 inside: -2); x=2: 8 - (2 bright above/below + 3 in column 3) = 3 (rows 0, 3: 8 - 3 = 5);
    # x=3: 8 - (3 in column 2 + 2 above/below) = 3, the zero padding on the right acting as dark pixels.
    step = _img([[0, 0, 1, 1]] * 4)
    assert _full(step, "laplace").tolist() == [[0, -2, 5, 5], [0, -3, 3, 3], [0, -3, 3, 3], [0, -2, 5, 5]]
    # Sobel, interior rows: x=1 reads kernel column 2 = (2, 4, 4) -> 10; x=2 columns 1, 2 = (-2+2) + 0+4 + 2+4 = 10;
    # x=3 columns 0, 1 = -4-2-4+0-2+2 = -10. (A flipped kernel, i.e. a true convolution, would give -10 at x=1.)
    assert _full(step, "sobel")[1:3].tolist() == [[0, 10, 10, -10]] * 2


def test_mso_constant_image_is_zero_inside_and_zero_padding_shows_on_the_border():
    # Constant c: response = c * (sum of the kernel taps that fall inside the image).
    # Laplace: interior 8 - 8 = 0; side 8 - 5 = 3; corner 8 - 3 = 5.
    c = 0.5
    flat = torch.full((1, 1, 4, 4), c)
    assert (_full(flat, "laplace") / c).tolist() == [[5, 3, 3, 5], [3, 0, 0, 3], [3, 0, 0, 3], [5, 3, 3, 5]]
    # Sobel S = [[-4, -2, 2], [-4, 0, 4], [-2, 2, 4]]: taps inside the image are
    #   corner (0, 0) rows 1-2 x cols 1-2: 0+4+2+4 = 10;  (0, 3) rows 1-2 x cols 0-1: -4+0-2+2 = -4
    #   corner (3, 0) rows 0-1 x cols 1-2: -2+2+0+4 = 4;  (3, 3) rows 0-1 x cols 0-1: -4-2-4+0 = -10
    #   top side rows 1-2: 0 + 4 = 4; bottom rows 0-1: -4 + 0 = -4; left cols 1-2: 0 + 10 = 10; right cols 0-1: -10
    assert (_full(flat, "sobel") / c).tolist() == [[10, 4, 4, -4], [10, 0, 0, -10], [10, 0, 0, -10], [4, -4, -4, -10]]
    # Prewitt P = [[-3, -1, 1], [-3, 0, 3], [-1, 1, 3]]: corners 0+3+1+3 = 7, -3+0-1+1 = -3,
    #   -1+1+0+3 = 3, -3-1-3+0 = -7; sides: top 0 + 3 = 3, bottom -3, left 0 + 7 = 7, right -7
    assert (_full(flat, "prewitt") / c).tolist() == [[7, 3, 3, -3], [7, 0, 0, -7], [7, 0, 0, -7], [3, -3, -3, -7]]


def test_mso_stride_samples_rows_and_columns_from_zero():
    # stride 2 keeps (0, 0), (0, 2), (2, 0), (2, 2) of the corner's Sobel map above
    assert edge_map(CORNER, "sobel", stride=2)[0, 0].tolist() == [[0, 0], [0, 10]]
    # stride 3 keeps rows/cols 0 and 3: Laplace corner map -> [[0, 0], [0, 5]]
    assert edge_map(CORNER, "laplace", stride=3)[0, 0].tolist() == [[0, 0], [0, 5]]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("size,stride", [((288, 144), 4), ((13, 10), 4), ((9, 7), 3), ((6, 5), 1)])
def test_mso_equals_plain_conv2d_with_msos_separate_kernels(op, size, stride):
    # Independent transcription of PEF.py: one conv2d(padding=1, stride) per kernel, responses summed.
    torch.manual_seed(0)
    gray = torch.rand(2, 1, *size) * 2 - 1
    expected = sum(F.conv2d(gray, torch.tensor(k, dtype=torch.float32).view(1, 1, 3, 3), stride=stride, padding=1) for k in MSO_KERNELS[op])
    got = edge_map(gray, op, "mso", stride=stride)
    assert got.shape == expected.shape == (2, 1, (size[0] - 1) // stride + 1, (size[1] - 1) // stride + 1)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


# ---- mode "magnitude": hand computations ---------------------------------------------------

def test_magnitude_vertical_step_by_hand():
    # Replicated borders, so columns stay constant top to bottom and gy = 0.
    step = _img([[0, 0, 1, 1]] * 4)
    # Sobel gx (raw [-1, 0, 1] x [1, 2, 1]): x=1 right column bright 1+2+1 = 4, x=2 left dark right bright = 4,
    # x=0 / x=3 both sides equal (replicate) = 0; magnitude sqrt(gx^2 + 1e-6): 1e-3, 4, 4, 1e-3.
    row = [1e-3, 4.0, 4.0, 1e-3]
    torch.testing.assert_close(_full(step, "sobel", "magnitude"), torch.tensor([row] * 4), rtol=1e-6, atol=1e-6)
    # Prewitt gx (raw [-1, 0, 1] x [1, 1, 1]) = 3 at x = 1, 2.
    torch.testing.assert_close(_full(step, "prewitt", "magnitude"), torch.tensor([[1e-3, 3.0, 3.0, 1e-3]] * 4), rtol=1e-6, atol=1e-6)
    # |8-neighbour Laplacian|: x=1 |(-8)*0 + 3| = 3, x=2 |-8 + 5| = 3, x=3 |-8 + 8| = 0 (replicate, unlike mso's 3).
    assert _full(step, "laplace", "magnitude").tolist() == [[0, 3, 3, 0]] * 4


def test_magnitude_corner_by_hand():
    # At (2, 2) the 3x3 window is [[0, 0, 0], [0, 1, 1], [0, 1, 1]]:
    #   Sobel gx = (0 - 0) + 2 (1 - 0) + (1 - 0) = 3, gy = (0 + 2 + 1) - 0 = 3 -> sqrt(18 + 1e-6) = 4.242641
    #   Prewitt gx = 2, gy = 2 -> sqrt(8 + 1e-6) = 2.828427
    #   Laplace |8 * 1 - 3| = 5.  At (3, 3) all replicated neighbours are bright: |8 - 8| = 0 (mso: 5).
    sob, pre, lap = (_full(CORNER, op, "magnitude") for op in ("sobel", "prewitt", "laplace"))
    assert sob[2, 2].item() == pytest.approx(18 ** 0.5, abs=1e-5)
    assert pre[2, 2].item() == pytest.approx(8 ** 0.5, abs=1e-5)
    assert lap[2, 2].item() == 5 and lap[3, 3].item() == 0


def test_magnitude_constant_image_has_no_border_edges():
    flat = torch.full((1, 1, 5, 4), -0.3)
    for op in ("sobel", "prewitt"):
        torch.testing.assert_close(_full(flat, op, "magnitude"), torch.full((5, 4), 1e-3), rtol=1e-5, atol=0)  # sqrt(eps)
    assert _full(flat, "laplace", "magnitude").abs().max().item() < 1e-6


def test_magnitude_border_is_replicated():
    # One bright pixel at (1, 1). The window of (0, 0) with replicated borders reads rows
    # (0, 0, 1) x cols (0, 0, 1): the bright pixel once, at window position (2, 2), so
    # Sobel/Prewitt gx = gy = 1 -> sqrt(2 + 1e-6), Laplacian |1 - 8 * 0| = 1. A reflected border
    # (rows/cols (1, 0, 1)) would show it 4 times: gx = gy = 0 and Laplacian 4.
    dot = _img([[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    for op in ("sobel", "prewitt"):
        assert _full(dot, op, "magnitude")[0, 0].item() == pytest.approx(2 ** 0.5, abs=1e-5)
    assert _full(dot, "laplace", "magnitude")[0, 0].item() == 1
    assert _full(dot, "laplace", "magnitude")[1, 1].item() == 8  # |(-8) * 1|


def test_magnitude_laplace_is_abs_of_mso_laplace_inside():
    torch.manual_seed(1)
    gray = torch.rand(2, 1, 8, 7) * 2 - 1
    mso, mag = edge_map(gray, "laplace", "mso", 1), edge_map(gray, "laplace", "magnitude", 1)
    torch.testing.assert_close(mag[..., 1:-1, 1:-1], mso[..., 1:-1, 1:-1].abs(), rtol=0, atol=1e-5)


# ---- shapes, dtype, gradients, errors ----------------------------------------------------

@pytest.mark.parametrize("mode", ["mso", "magnitude"])
@pytest.mark.parametrize("op", OPS)
def test_paper_size_gives_stem_size_in_float32_under_bf16_autocast(op, mode):
    # 288 x 144 -> floor(287 / 4) + 1 = 72, floor(143 / 4) + 1 = 36: the ResNet stem's output size
    torch.manual_seed(2)
    gray = torch.rand(1, 1, 288, 144) * 2 - 1
    reference = edge_map(gray, op, mode)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = edge_map(gray, op, mode)
        out_from_bf16 = edge_map(gray.bfloat16(), op, mode)
    assert out.shape == (1, 1, 72, 36) and out.dtype == torch.float32 and out_from_bf16.dtype == torch.float32
    # equal to the computation outside autocast: the filter did not run in bf16
    torch.testing.assert_close(out, reference, rtol=0, atol=0)
    torch.testing.assert_close(out_from_bf16, edge_map(gray.bfloat16().float(), op, mode), rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["mso", "magnitude"])
def test_no_gradient_flows(mode):
    gray = torch.rand(1, 1, 8, 8, requires_grad=True)
    out = edge_map(gray, "sobel", mode)
    assert not out.requires_grad and out.grad_fn is None


def test_errors():
    gray = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="operator"):
        edge_map(gray, "canny")
    with pytest.raises(ValueError, match="mode"):
        edge_map(gray, "sobel", "signed")
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        edge_map(torch.zeros(1, 3, 8, 8), "sobel")
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        edge_map(torch.zeros(1, 8, 8), "sobel")
    with pytest.raises(ValueError, match="stride"):
        edge_map(gray, "sobel", stride=0)
    assert edge_map(gray, "sobel", stride=1).shape == (1, 1, 8, 8)  # stride 1 is allowed
    with pytest.raises(TypeError):
        edge_map(torch.zeros(1, 1, 8, 8, dtype=torch.uint8), "sobel")


# ---- gray_from_normalized -------------------------------------------------------------------

def test_gray_from_normalized_is_bt601_in_minus_one_one():
    # pixels: black, white, red, green, blue, (0.2, 0.4, 0.6)
    rgb = torch.tensor([[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0.2, 0.4, 0.6]], dtype=torch.float32)
    x = imagenet_normalize(rgb.t().reshape(1, 3, 1, 6))
    # gray = 0.299 R + 0.587 G + 0.114 B, then 2 g - 1:
    #   -1, 1, 2(0.299)-1 = -0.402, 2(0.587)-1 = 0.174, 2(0.114)-1 = -0.772,
    #   0.0598 + 0.2348 + 0.0684 = 0.363 -> -0.274
    expected = torch.tensor([-1.0, 1.0, -0.402, 0.174, -0.772, -0.274]).view(1, 1, 1, 6)
    got = gray_from_normalized(x)
    assert got.shape == (1, 1, 1, 6) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    with pytest.raises(ValueError):
        gray_from_normalized(torch.zeros(1, 1, 2, 2))


# ---- EdgeEmbedding (ours) ---------------------------------------------------------------------

def test_edge_embedding_starts_as_identity_then_learns():
    torch.manual_seed(3)
    block = EdgeEmbedding(4).train()
    stem, edge = torch.randn(2, 4, 6, 5), torch.randn(2, 1, 6, 5)
    out = block(stem, edge)
    assert out.shape == stem.shape and torch.equal(out, stem)  # zero-initialised BN scale and shift: a no-op
    (out * torch.randn_like(out)).sum().backward()
    assert block.bn.weight.grad.abs().sum() > 0  # the scale learns first
    with torch.no_grad():
        block.bn.weight.fill_(1.0)
    assert not torch.allclose(block(stem, edge), stem)
    with pytest.raises(ValueError):
        block(stem, torch.randn(2, 1, 3, 5))
    with pytest.raises(ValueError):
        block(torch.randn(2, 3, 6, 5), edge)
