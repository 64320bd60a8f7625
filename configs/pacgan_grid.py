"""PacGAN's 2D-grid experiment (Lin et al. 2018, Table 1): its networks,
optimizer and batch, on grid25 (25 modes on {-4,-2,0,2,4}^2, std 0.05).

    python launch.py --config configs/pacgan_grid.py
    python launch.py --config configs/pacgan_grid.py:pack=4

G: 4 x 400 BatchNorm-ReLU MLP on a 2-d Gaussian z; D: 3 maxout layers of 200
units x 5 pieces (gan_jax/models/pacgan.py); every kernel drawn from
N(0, 0.02^2); non-saturating loss; Adam(1e-4, b1=0.8); simultaneous updates
(its code computes both gradients at the same point, ALI's algorithm).
PacGAN's D judges 100 packs of m examples per step, so the global
batch is 100 * m (gan_jax packs a batch into batch / m packs). The paper
trains 400 epochs of 100,000 samples: 400,000 iterations; num_steps here is
a fraction of that (docs/results.md says which was measured).
Arguments (`:key=value,...`):
  pack: a whole number >= 1 (the paper: 1 to 4); default 1
Settings: model=pacgan, data.name=grid25, z_dim=2, batch_size=100,
  g.optimizer.lr=0.0001, g.optimizer.b1=0.8, d.optimizer.lr=0.0001,
  d.optimizer.b1=0.8, g.width=400, g.depth=4, d.width=200, d.depth=3,
  d.pieces=5, g.init_std=0.02, d.init_std=0.02, loss.name=non_saturating,
  updates=simultaneous
"""
from configs import default


def get_config(arg=None):
  args = default.parse_arg(arg, pack='1')
  m = default.positive_int(args, 'pack')
  config = default.get_config('data=grid25')
  config.model = 'pacgan'
  config.z_dim = 2
  config.batch_size = 100 * m
  config.num_steps = 20_000
  adam = lambda: default.optimizer(1e-4, 0.8, 0.999)
  config.g = default.net(adam(), width=400, depth=4, norm='default',
                         init_std=0.02)
  config.d = default.net(adam(), width=200, depth=3, pieces=5, pack=m,
                         init_std=0.02)
  config.updates = 'simultaneous'  # Its code's (ALI's) training algorithm.
  config.eval.num_samples = 2500  # PacGAN's evaluation sample count.
  config.eval_every = 5000
  config.checkpoint.every = 5000
  return config
