"""Pictures of what the generator makes: 2D scatter plots (and image grids)."""
import numpy as np
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
  Image.fromarray(np.asarray(image)).save(path)
