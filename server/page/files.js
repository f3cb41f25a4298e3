// Files the page writes without any library: 8-bit grayscale PNGs (exact
// pixel values, which a canvas's colour handling does not promise) and an
// uncompressed ZIP to hold one PNG per object.

const CRC_TABLE = Array.from({length: 256}, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes, crc = 0xffffffff) {
  for (const byte of bytes) crc = CRC_TABLE[(crc ^ byte) & 0xff] ^ (crc >>> 8);
  return crc;
}

function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

// Little- or big-endian unsigned integers of 2 or 4 bytes, as the formats want them.
function uints(values, size, littleEndian) {
  const view = new DataView(new ArrayBuffer(values.length * size));
  values.forEach((value, i) => {
    if (size === 2) view.setUint16(i * size, value, littleEndian);
    else view.setUint32(i * size, value, littleEndian);
  });
  return new Uint8Array(view.buffer);
}

async function zlib(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function pngChunk(type, data) {
  const head = new TextEncoder().encode(type);
  const crc = (crc32(data, crc32(head)) ^ 0xffffffff) >>> 0;
  return concat([uints([data.length], 4, false), head, data, uints([crc], 4, false)]);
}

// `pixels`: a row-major width*height Uint8Array of gray values.
export async function grayPng(pixels, width, height) {
  const rows = new Uint8Array((width + 1) * height);  // each row: filter type 0, then its pixels
  for (let y = 0; y < height; y++) rows.set(pixels.subarray(y * width, (y + 1) * width), y * (width + 1) + 1);
  const header = concat([uints([width, height], 4, false), new Uint8Array([8, 0, 0, 0, 0])]);
  return concat([
    new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]),
    pngChunk("IHDR", header),
    pngChunk("IDAT", await zlib(rows)),
    pngChunk("IEND", new Uint8Array(0)),
  ]);
}

// `files`: [{name, bytes}]. Stored, not compressed: the PNGs inside already are.
export function zipArchive(files) {
  const local = [], central = [];
  let offset = 0;
  for (const {name, bytes} of files) {
    const nameBytes = new TextEncoder().encode(name);
    const crc = (crc32(bytes) ^ 0xffffffff) >>> 0;
    // version 20, flags: UTF-8 names, method 0 (stored), time 0, date 1980-01-01
    const common = concat([uints([20, 0x0800, 0, 0, 0x21], 2, true), uints([crc, bytes.length, bytes.length], 4, true),
                           uints([nameBytes.length, 0], 2, true)]);
    const header = concat([uints([0x04034b50], 4, true), common, nameBytes]);
    local.push(header, bytes);
    central.push(concat([uints([0x02014b50], 4, true), uints([20], 2, true), common,
                         uints([0, 0, 0], 2, true), uints([0, offset], 4, true), nameBytes]));
    offset += header.length + bytes.length;
  }
  const directory = concat(central);
  const end = concat([uints([0x06054b50], 4, true), uints([0, 0, files.length, files.length], 2, true),
                      uints([directory.length, offset], 4, true), uints([0], 2, true)]);
  return new Blob([...local, directory, end], {type: "application/zip"});
}
