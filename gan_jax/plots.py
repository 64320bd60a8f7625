"""Pictures of what the generator makes: 2D scatter plots (and image grids)."""
import numpy as np
from etils import epath
from PIL import Image, ImageDraw


def scatter(real, fake, size=512, margin=0.1):
  """Draws real (grey) and generated (red) 2D points; returns uint8 [H, W, 3]."""
  real, fake = np.asarray(real), np.asarray(fake)
  lim = np.abs(real).max() * (1 + margin) + 1e-6
  img = Image.new('RGB', (size, size), 'white')
  draw = ImageDraw.Draw(img)

  def to_px(p):
    p = np.clip(p, -lim, lim)
    return (p[:, 0] + lim) / (2 * lim) * (size - 1), (lim - p[:, 1]) / (2 * lim) * (size - 1)

  for points, colour in ((real, (150, 150, 150)), (fake, (220, 30, 30))):
    for x, y in zip(*to_px(points)):
      draw.ellipse((x - 1.5, y - 1.5, x + 1.5, y + 1.5), fill=colour)
  return np.asarray(img)


def save_png(image, path):
  """Writes `image` as a PNG to `path`, a local path or a URL (gs://...)."""
  with epath.Path(path).open('wb') as f:
    Image.fromarray(np.asarray(image)).save(f, format='PNG')


def image_grid(images, rows, pad=2, cols=None):
  """Tiles `rows * cols` images [N, H, W, C] in [-1, 1] into one uint8 picture
  (`cols` defaults to `rows`).

  Images are laid out row by row with `pad` white pixels between them;
  grayscale (C = 1) becomes RGB, so every grid is [H', W', 3].
  """
  cols = rows if cols is None else cols
  images = np.asarray(images, np.float32)[:rows * cols]
  n, h, w, c = images.shape
  pixels = np.clip(np.round((images + 1) * 127.5), 0, 255).astype(np.uint8)
  if c == 1:
    pixels = np.repeat(pixels, 3, axis=-1)
  rows_used = -(-n // cols)
  grid = np.full((rows_used * (h + pad) + pad, cols * (w + pad) + pad, 3), 255,
                 np.uint8)
  for i, image in enumerate(pixels):
    r, col = divmod(i, cols)
    top, left = pad + r * (h + pad), pad + col * (w + pad)
    grid[top:top + h, left:left + w] = image
  return grid
