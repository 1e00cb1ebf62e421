"""The U-Net: shapes, class context, embeddings."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from diffusion.unet import SubpixelUpsample, UNet, UNetConfig, forward_flops, timestep_embedding

from .conftest import randomised


def small(image_size=16, channels=1, num_classes=3, patch_size=1, base_channels=8, **kw):
    return UNetConfig(image_size=image_size, in_channels=channels, num_classes=num_classes, base_channels=base_channels,
                      channel_mult=[1, 2, 2], num_res_blocks=1, patch_size=patch_size, norm_groups=4, **kw)


@pytest.mark.parametrize("size", [16, 28, 32])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("patch_size", [1, 2])
@pytest.mark.parametrize("upsample", ["nearest_conv", "subpixel"])
def test_output_shape_matches_input(size, channels, patch_size, upsample):
    net = UNet(small(size, channels, patch_size=patch_size, attention_levels=[2], attention_heads=2,
                     upsample=upsample))
    x = torch.randn(2, channels, size, size)
    out = net(x, torch.tensor([0, 999]), F.one_hot(torch.tensor([0, 2]), 3).float())
    assert out.shape == x.shape  # 28 -> 14 -> 7 -> 4 and back, natively


def test_context_required_iff_conditional():
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([1, 2])
    conditional = UNet(small(num_classes=3))
    with pytest.raises(ValueError, match="class-conditional.*context"):
        conditional(x, t)
    with pytest.raises(ValueError, match=r"shape \(B, 3\)"):
        conditional(x, t, torch.zeros(2, 4))
    unconditional = UNet(small(num_classes=0))
    assert unconditional(x, t).shape == x.shape
    with pytest.raises(ValueError, match="unconditional"):
        unconditional(x, t, torch.zeros(2, 3))


def test_wrong_image_shape_is_named():
    with pytest.raises(ValueError, match=r"\(B, 1, 16, 16\)"):
        UNet(small())(torch.randn(1, 1, 28, 28), torch.tensor([0]), torch.zeros(1, 3))


def test_context_is_linear_in_the_class_weights():
    net = randomised(UNet(small())).eval()
    x, t = torch.randn(1, 1, 16, 16).repeat(4, 1, 1, 1), torch.full((4,), 10)
    ctx = torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [0.5, 0, 0.5], [0, 0, 0]])
    emb = net.embed(t, ctx)
    torch.testing.assert_close(emb[2], (emb[0] + emb[1]) / 2)  # a mix embeds as the mix of embeddings
    torch.testing.assert_close(emb[3], net.embed(t[:1], torch.zeros(1, 3))[0])
    out = net(x, t, ctx)
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[0], out[3])  # the class matters


def test_outputs_start_at_zero_and_depend_on_t():
    net = UNet(small())
    x = torch.randn(2, 1, 16, 16)
    assert float(net(x, torch.tensor([5, 5]), torch.zeros(2, 3)).detach().abs().max()) == 0.0  # zero-initialised
    net = randomised(net)
    a = net(x, torch.tensor([5, 5]), torch.zeros(2, 3))
    b = net(x, torch.tensor([500, 500]), torch.zeros(2, 3))
    assert not torch.allclose(a, b)


def test_timestep_embedding():
    emb = timestep_embedding(torch.tensor([0, 1, 999]), 16)
    assert emb.shape == (3, 16)
    torch.testing.assert_close(emb[0], torch.cat([torch.ones(8), torch.zeros(8)]))
    assert float(emb.abs().max()) <= 1.0


@pytest.mark.parametrize("bad, message", [
    (dict(channel_mult=[]), "channel_mult"),
    (dict(attention_levels=[5]), "attention_levels"),
    (dict(patch_size=3), "divisible by patch_size"),
    (dict(norm_groups=5), "norm_groups"),
    (dict(upsample="bilinear"), "upsample must be one of"),
])
def test_config_validation(bad, message):
    with pytest.raises(ValueError, match=message):
        UNet(UNetConfig(**{**small().to_dict(), **bad}))


def test_self_attention_is_multi_head_scaled_dot_product_attention():
    from diffusion.unet import SelfAttention

    torch.manual_seed(0)
    attn = SelfAttention(channels=16, heads=4, groups=4)
    torch.nn.init.normal_(attn.proj.weight)  # the zero-initialised output projection would hide everything
    x = torch.randn(2, 16, 5, 7)
    q, k, v = attn.qkv(attn.norm(x)).reshape(2, 3, 4, 4, 35).transpose(-1, -2).unbind(dim=1)
    expected = x + attn.proj(F.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(2, 16, 5, 7))
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-5)


def test_subpixel_upsample_is_a_conv_at_low_resolution_then_a_pixel_shuffle():
    """Output pixel (2i + a, 2j + b), channel c is the low-resolution conv's channel 4c + 2a + b at (i, j); an odd
    target size (7 <- 4) drops the last row and column."""
    torch.manual_seed(0)
    up = SubpixelUpsample(6, 3)
    x = torch.randn(2, 6, 4, 4)
    low = up.conv(x)  # (2, 12, 4, 4)
    out = up(x, (7, 7))
    assert out.shape == (2, 3, 7, 7)
    for c, a, b, i, j in [(0, 0, 0, 0, 0), (2, 1, 0, 3, 1), (1, 1, 1, 2, 2)]:
        if 2 * i + a < 7 and 2 * j + b < 7:
            torch.testing.assert_close(out[:, c, 2 * i + a, 2 * j + b], low[:, 4 * c + 2 * a + b, i, j])
    assert up(x, (8, 8)).shape == (2, 3, 8, 8)


@pytest.mark.parametrize("num_classes, channels, patch_size, upsample",
                         [(0, 1, 1, "nearest_conv"), (3, 3, 2, "subpixel")])  # the second: the shipped model's stem
def test_forward_flops_on_meta_match_a_real_forward(num_classes, channels, patch_size, upsample):
    kw = dict(num_classes=num_classes, channels=channels, patch_size=patch_size, upsample=upsample,
              attention_levels=[1])
    config = small(**kw)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        UNet(config)(torch.randn(1, channels, 16, 16), torch.tensor([3]), torch.zeros(1, 3) if num_classes else None)
    assert forward_flops(config) == counter.get_total_flops() > 0
    # convolutions dominate: twice the width is close to four times the FLOPs
    assert 3.5 < forward_flops(small(**kw, base_channels=16)) / forward_flops(config) <= 4.0


def test_subpixel_decoder_costs_fewer_flops_for_the_same_levels():
    def flops(upsample):
        return forward_flops(UNetConfig(image_size=28, base_channels=32, channel_mult=[1, 2], norm_groups=8,
                                        patch_size=2, upsample=upsample))

    assert flops("subpixel") < 0.95 * flops("nearest_conv")
