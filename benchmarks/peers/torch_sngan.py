"""PEER FOR BENCHMARKING ONLY, NOT PART OF gan_jax: SNGAN-CIFAR10 in PyTorch.

The same train iteration as gan_jax's `configs/cifar10_sngan.py`
(`gan_jax/models/sngan_resnet.py` + `gan_jax/step.py`), written the way a
PyTorch user would, to time next to `benchmarks/train_step.py` on the same
machine. Nothing in gan_jax imports it; it imports nothing from gan_jax.

    python3 benchmarks/peers/torch_sngan.py MODES BATCHES STEPS [WARMUP]
    python3 benchmarks/peers/torch_sngan.py eager,compile 64 200

MODES: comma-separated, of eager, compile (torch.compile of G and D, default
mode) and compile-cudagraphs (mode='reduce-overhead'), as in
../shared/peers/torch_dcgan.py. BATCHES: comma-separated batch sizes. STEPS:
timed iterations. WARMUP: untimed iterations before them (default 10, as the
DCGAN peer; compile modes compile during these).

One "step" (= one iteration, what gan_jax's benchmark calls an iteration and
`gan_jax.train` a step), with D_STEPS = 5:
  5 x D update, each: a NEW real batch [batch, 3, 32, 32] and NEW z
      [batch, 128]; G forward in training mode under no_grad (BatchNorm on
      batch statistics, fakes detached as gan_jax's stop_gradient); ONE D
      forward on cat([real, fake]) (2 * batch images, as gan_jax concatenates
      them); hinge loss mean(relu(1 - D(real))) + mean(relu(1 + D(fake)));
      backward; Adam step; the linear learning-rate decay's step.
  1 x G update: NEW z; G forward (training mode); D forward on the fakes with
      D's parameters frozen (requires_grad False, so, like gan_jax's grad with
      respect to G's parameters only, no D weight gradients are computed);
      loss -mean(D(fake)); backward through D into G; Adam step on G only.
  Spectral norm (torch.nn.utils.parametrizations.spectral_norm, 1 power
  iteration per forward in training mode, eps 1e-12, as flax.linen.SpectralNorm
  with update_stats=True) on all 11 D layers: 8 residual convolutions, the 2
  learnable shortcut 1x1 convolutions and the last Linear. D runs in training
  mode in both updates, as in gan_jax (whose G update also runs D with
  train=True, power iteration included, and drops the new `u`; here `u` is
  kept, as are G's BatchNorm running averages from the D updates' G passes,
  which gan_jax drops: the same arithmetic).
  Adam(2e-4, betas=(0, 0.9), eps=1e-8) for both, each decayed linearly to 0
  over its own updates (G 50,000, D 5 x 50,000), as gan_jax's optax chain.
Not in the peer, present in gan_jax's step (small next to the convolutions):
the step's metrics (D/G gradient norms, mean logits, the diversity_ratio of
the batch, the non-finite guard). The D(real) pass of gan_jax's G update is
removed by XLA for the hinge loss, so neither side runs it.

Both sides draw real batches from two pre-made device tensors used in turn
(data loading and host-to-device copies are NOT timed) and z with randn on
the device.

Reported per (mode, batch), one JSON line on stdout:
  ms_per_step: wall time of STEPS iterations (after WARMUP, ended by
      torch.cuda.synchronize) / STEPS: one full iteration as defined above.
  images_per_s: batch / (ms_per_step / 1000), the images G is trained on per
      second: the SAME definition as train_step.py's `images_per_s`, so the
      gan_jax / peer ratio of images_per_s (or of ms per iteration) is apples
      to apples for d_steps=5.
  real_images_per_s: D_STEPS * batch per iteration: the real images D consumes
      per second, the same as train_step.py's `real_images_per_s`.
  g_params, d_params: trainable parameter counts (equal to gan_jax's
      sngan_resnet at 32x32: G 4,276,739, D 1,053,825; checked at start and by
      tests/test_peers.py against gan_jax itself).
TF32 is allowed for matmuls and convolutions (as in the DCGAN peer; XLA on
the GPU uses TF32 for float32 convolutions and dots by default too). Memory
layout is PyTorch's default NCHW. Compare ratios, not absolute times.
"""
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

Z_DIM, G_CH, D_CH, IMAGE_CHANNELS, SIZE = 128, 256, 128, 3, 32
D_STEPS = 5
LR, BETAS, ADAM_EPS = 2e-4, (0.0, 0.9), 1e-8
NUM_STEPS = 50_000  # G updates in configs/cifar10_sngan.py; D gets D_STEPS x.
# gan_jax's BatchNorm: decay 0.9 (= PyTorch momentum 0.1), epsilon 2e-5.
BN_MOMENTUM, BN_EPS = 0.1, 2e-5
# gan_jax.models.sngan_resnet: Glorot-uniform, gain sqrt(2) on residual convs.
RESIDUAL_GAIN = 2 ** 0.5
# gan_jax's trainable parameter counts for configs/cifar10_sngan.py at 32x32x3
# (tests/test_peers.py checks them against gan_jax itself).
GAN_JAX_G_PARAMS, GAN_JAX_D_PARAMS = 4_276_739, 1_053_825


def _conv(cin, cout, kernel, gain=RESIDUAL_GAIN):
  """A 'SAME' convolution with bias, Glorot-uniform kernel and zero bias."""
  conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2)
  nn.init.xavier_uniform_(conv.weight, gain)
  nn.init.zeros_(conv.bias)
  return conv


def _linear(fin, fout):
  layer = nn.Linear(fin, fout)
  nn.init.xavier_uniform_(layer.weight)
  nn.init.zeros_(layer.bias)
  return layer


def _sn(module, spectral=True):
  """Spectral norm, 1 power iteration per training forward (after the init,
  since the parametrization normalises the weight it is given)."""
  if not spectral:
    return module
  return spectral_norm(module, n_power_iterations=1, eps=1e-12)


def _up(x):
  return F.interpolate(x, scale_factor=2, mode='nearest')


class GBlock(nn.Module):
  """BN -> ReLU -> up -> conv3 -> BN -> ReLU -> conv3, plus up -> conv1."""

  def __init__(self, cin, cout):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(cin, BN_EPS, BN_MOMENTUM)
    self.c1 = _conv(cin, cout, 3)
    self.bn2 = nn.BatchNorm2d(cout, BN_EPS, BN_MOMENTUM)
    self.c2 = _conv(cout, cout, 3)
    self.shortcut = _conv(cin, cout, 1, gain=1.0)

  def forward(self, x):
    h = self.c1(_up(F.relu(self.bn1(x))))
    h = self.c2(F.relu(self.bn2(h)))
    return h + self.shortcut(_up(x))


class Generator(nn.Module):
  """z -> Linear 4*4*ch -> 3 up-blocks -> BN -> ReLU -> conv3 to 3 -> tanh."""

  def __init__(self, z_dim=Z_DIM, ch=G_CH, out_channels=IMAGE_CHANNELS):
    super().__init__()
    self.ch = ch
    self.fc = _linear(z_dim, 4 * 4 * ch)
    self.blocks = nn.Sequential(*[GBlock(ch, ch) for _ in range(3)])
    self.bn = nn.BatchNorm2d(ch, BN_EPS, BN_MOMENTUM)
    self.out = _conv(ch, out_channels, 3, gain=1.0)

  def forward(self, z):
    x = self.fc(z).view(z.shape[0], self.ch, 4, 4)
    x = self.blocks(x)
    return torch.tanh(self.out(F.relu(self.bn(x))))


class DBlock(nn.Module):
  """gan_jax's DBlock: optimized (first, on the image), down- or plain block."""

  def __init__(self, cin, cout, downsample, optimized=False, spectral=True):
    super().__init__()
    self.downsample, self.optimized = downsample, optimized
    self.c1 = _sn(_conv(cin, cout, 3), spectral)
    self.c2 = _sn(_conv(cout, cout, 3), spectral)
    self.learnable_shortcut = optimized or downsample or cin != cout
    if self.learnable_shortcut:
      self.shortcut = _sn(_conv(cin, cout, 1, gain=1.0), spectral)

  def forward(self, x):
    h = x if self.optimized else F.relu(x)
    h = self.c2(F.relu(self.c1(h)))
    if self.downsample:
      h = F.avg_pool2d(h, 2)
    if self.optimized:  # Pool, then the 1x1 conv.
      shortcut = self.shortcut(F.avg_pool2d(x, 2))
    elif self.learnable_shortcut:  # The 1x1 conv, then pool.
      shortcut = self.shortcut(x)
      if self.downsample:
        shortcut = F.avg_pool2d(shortcut, 2)
    else:
      shortcut = x
    return h + shortcut


class Discriminator(nn.Module):
  """Optimized block, down-block, 2 blocks; ReLU, sum over H, W, Linear 1."""

  def __init__(self, ch=D_CH, in_channels=IMAGE_CHANNELS, spectral=True):
    super().__init__()
    self.blocks = nn.Sequential(
        DBlock(in_channels, ch, True, optimized=True, spectral=spectral),
        DBlock(ch, ch, True, spectral=spectral),
        DBlock(ch, ch, False, spectral=spectral),
        DBlock(ch, ch, False, spectral=spectral))
    self.fc = _sn(_linear(ch, 1), spectral)

  def forward(self, x):
    h = torch.sum(F.relu(self.blocks(x)), dim=(2, 3))
    return self.fc(h)[:, 0]


def count_params(module):
  return sum(p.numel() for p in module.parameters())


def hinge_d(real_logits, fake_logits):
  return F.relu(1. - real_logits).mean() + F.relu(1. + fake_logits).mean()


def hinge_g(fake_logits):
  return -fake_logits.mean()


def make_optimizers(g, d, num_steps=NUM_STEPS, d_steps=D_STEPS):
  """Adam for G and D with linear decay to 0 over each one's updates."""
  og = torch.optim.Adam(g.parameters(), LR, betas=BETAS, eps=ADAM_EPS)
  od = torch.optim.Adam(d.parameters(), LR, betas=BETAS, eps=ADAM_EPS)
  sg = torch.optim.lr_scheduler.LambdaLR(
      og, lambda i: max(0., 1. - i / num_steps))
  sd = torch.optim.lr_scheduler.LambdaLR(
      od, lambda i: max(0., 1. - i / (num_steps * d_steps)))
  return og, od, sg, sd


def make_step(g, d, og, od, sg, sd, z_dim=Z_DIM):
  """One SNGAN iteration: d_steps D updates (one per real batch), 1 G update.

  `g` and `d` may be torch.compile'd wrappers; `d_params` must be the D
  parameters that `od` updates.
  """
  d_params = [p for group in od.param_groups for p in group['params']]

  def step(reals):
    """reals: [d_steps, batch, C, H, W]; returns (g_loss, last d_loss)."""
    batch = reals.shape[1]
    for real in reals:
      z = torch.randn(batch, z_dim, device=reals.device)
      with torch.no_grad():
        fake = g(z)
      real_logits, fake_logits = d(torch.cat([real, fake])).split(batch)
      d_loss = hinge_d(real_logits, fake_logits)
      od.zero_grad(set_to_none=True)
      d_loss.backward()
      od.step()
      sd.step()
    for p in d_params:
      p.requires_grad_(False)
    g_loss = hinge_g(d(g(torch.randn(batch, z_dim, device=reals.device))))
    og.zero_grad(set_to_none=True)
    g_loss.backward()
    og.step()
    sg.step()
    for p in d_params:
      p.requires_grad_(True)
    return g_loss.detach(), d_loss.detach()

  return step


def run(batch, mode, steps, warmup, dev):
  torch.manual_seed(0)
  g, d = Generator().to(dev), Discriminator().to(dev)
  og, od, sg, sd = make_optimizers(g, d)
  if mode.startswith('compile'):
    kw = dict(mode='reduce-overhead') if mode == 'compile-cudagraphs' else {}
    g, d = torch.compile(g, **kw), torch.compile(d, **kw)
  elif mode != 'eager':
    raise ValueError(f'unknown mode {mode!r}; use eager, compile or '
                     'compile-cudagraphs')
  step = make_step(g, d, og, od, sg, sd)
  # Two sets of d_steps real batches, used in turn (as train_step.py does).
  reals = [torch.rand(D_STEPS, batch, IMAGE_CHANNELS, SIZE, SIZE, device=dev)
           * 2 - 1 for _ in range(2)]
  for i in range(warmup):
    step(reals[i % 2])
  if dev == 'cuda':
    torch.cuda.synchronize()
  t = time.perf_counter()
  for i in range(steps):
    g_loss, d_loss = step(reals[i % 2])
  if dev == 'cuda':
    torch.cuda.synchronize()
  dt = (time.perf_counter() - t) / steps
  finite = bool(torch.isfinite(g_loss) and torch.isfinite(d_loss))
  return dt, finite


def main(argv):
  modes = argv[1].split(',') if len(argv) > 1 else ['eager']
  batches = [int(b) for b in argv[2].split(',')] if len(argv) > 2 else [64]
  steps = int(argv[3]) if len(argv) > 3 else 200
  warmup = int(argv[4]) if len(argv) > 4 else 10
  dev = 'cuda' if torch.cuda.is_available() else 'cpu'
  torch.backends.cudnn.benchmark = True
  torch.backends.cuda.matmul.allow_tf32 = True
  torch.backends.cudnn.allow_tf32 = True
  g_params = count_params(Generator())
  d_params = count_params(Discriminator())
  print(f'torch_sngan peer: parameters G {g_params:,} (gan_jax '
        f'{GAN_JAX_G_PARAMS:,}), D {d_params:,} (gan_jax {GAN_JAX_D_PARAMS:,})',
        file=sys.stderr, flush=True)
  if (g_params, d_params) != (GAN_JAX_G_PARAMS, GAN_JAX_D_PARAMS):
    raise SystemExit('parameter counts differ from gan_jax\'s sngan_resnet')
  device = torch.cuda.get_device_name() if dev == 'cuda' else 'cpu'
  for m in modes:
    for b in batches:
      common = dict(peer='torch', model='cifar10_sngan', mode=m, batch=b)
      try:
        dt, finite = run(b, m, steps, warmup, dev)
        print(json.dumps(dict(
            common, ms_per_step=round(dt * 1e3, 3),
            images_per_s=round(b / dt, 2),
            real_images_per_s=round(D_STEPS * b / dt, 2), d_steps=D_STEPS,
            steps=steps, warmup=warmup, finite=finite, g_params=g_params,
            d_params=d_params, device=device, torch=torch.__version__)),
              flush=True)
      except Exception as e:  # pylint: disable=broad-except
        print(json.dumps(dict(common, error=str(e)[:200])), flush=True)


if __name__ == '__main__':
  main(sys.argv)
