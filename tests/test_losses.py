"""The training objective and the EMA."""

import pytest
import torch

from diffusion.ema import EMA
from diffusion.losses import diffusion_loss
from diffusion.schedules import NoiseSchedule


class Fixed(torch.nn.Module):
    """A 'network' returning a fixed output, so the loss can be computed by hand."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, x, t, context=None):
        return self.out


@pytest.mark.parametrize("prediction_type", ["epsilon", "v"])
@pytest.mark.parametrize("t", [0, 30, 300, 999])
def test_min_snr_weighting_is_min_snr_gamma_in_x0_space(prediction_type, t):
    """Hang et al. 2023: with Min-SNR-gamma the loss is min(SNR_t, gamma) * ||x0_hat - x0||^2 for either target."""
    s = NoiseSchedule.from_name("cosine", 1000)
    g = torch.Generator().manual_seed(t)
    x0, noise, out = (torch.randn(1, 1, 4, 4, generator=g) for _ in range(3))
    tt = torch.tensor([t])
    loss = diffusion_loss(Fixed(out), s, x0, None, tt, noise, prediction_type, "min_snr", 5.0)
    x_t = s.q_sample(x0, tt, noise)
    x0_hat, _ = s.split_prediction(x_t, tt, out, prediction_type)
    expected = min(float(s.snr(tt)), 5.0) * float(((x0_hat - x0) ** 2).mean())
    assert float(loss) == pytest.approx(expected, rel=1e-3)


def test_unweighted_loss_is_plain_mse_on_the_target():
    s = NoiseSchedule.from_name("linear", 100)
    x0, noise, out = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    t = torch.tensor([1, 50, 99])
    assert float(diffusion_loss(Fixed(out), s, x0, None, t, noise, "epsilon")) == pytest.approx(
        float(((out - noise) ** 2).mean()), rel=1e-6)
    v = s.v_target(x0, t, noise)
    assert float(diffusion_loss(Fixed(out), s, x0, None, t, noise, "v")) == pytest.approx(
        float(((out - v) ** 2).mean()), rel=1e-6)


def test_ema_follows_with_warmup():
    model = torch.nn.Linear(2, 2, bias=False)
    ema = EMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model, step=0)  # decay warm-up: min(0.9, 1/10) = 0.1 -> mostly the new weights
    start = ema.model.weight.clone()
    assert torch.all(start > 0.8)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema.update(model, step=1000)  # decay 0.9
    torch.testing.assert_close(ema.model.weight, 0.9 * start)
    assert not ema.model.weight.requires_grad


class Recorder(torch.nn.Module):
    """Returns a fixed output and remembers the input it was given."""

    def __init__(self, out):
        super().__init__()
        self.out, self.seen = out, None

    def forward(self, x, t, context=None):
        self.seen = x
        return self.out


@pytest.mark.parametrize("prediction_type", ["epsilon", "v"])
def test_input_perturbation_moves_the_input_not_the_target(prediction_type):
    """DDPM-IP (Ning et al. 2023): the network sees q_sample(x0, t, noise + gamma xi), the loss keeps the target
    of (x0, noise)."""
    s = NoiseSchedule.from_name("cosine", 1000)
    g = torch.Generator().manual_seed(0)
    x0, noise, xi, out = (torch.randn(2, 1, 4, 4, generator=g) for _ in range(4))
    t = torch.tensor([10, 600])
    perturbed = noise + 0.1 * xi
    net = Recorder(out)
    with_ip = diffusion_loss(net, s, x0, None, t, noise, prediction_type, input_noise=perturbed)
    torch.testing.assert_close(net.seen, s.q_sample(x0, t, perturbed))
    assert not torch.allclose(net.seen, s.q_sample(x0, t, noise))
    plain = diffusion_loss(net, s, x0, None, t, noise, prediction_type)
    torch.testing.assert_close(net.seen, s.q_sample(x0, t, noise))
    assert float(with_ip) == pytest.approx(float(plain), rel=1e-6)  # same output, same target, same loss
