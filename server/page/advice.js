// What to do about an error the server sent: its sentence, or for an image
// it refused, a sentence with the sizes and the fix.

const megapixels = (pixels) => {
  const value = pixels / 1e6;
  return value >= 10 ? String(Math.round(value)) : String(Number(value.toFixed(2)));
};

// error: the server's {code, message}.
export function advice(error) {
  if (error.code === "image_too_large") {
    const over = /(\d+)x(\d+) pixels, more than the limit of ([\d,]+) pixels/.exec(error.message);
    if (over) {
      const [, width, height, limit] = over;
      return `${megapixels(width * height)} Mpx is over this server's ${megapixels(Number(limit.replace(/,/g, "")))} Mpx ` +
        "limit: scale the image down.";
    }
    return `${error.message} Scale the image down, or save it as a JPEG.`;
  }
  return error.message;
}
