// BLAKE3 (https://github.com/BLAKE3-team/BLAKE3-specs), hash mode, 32-byte output: the chunk
// ids of a chorus manifest are the BLAKE3 hashes of the chunks' bytes (docs/protocol.md §4).
// Written for the web player from the specification; plain JavaScript, one block at a time.

const IV = new Uint32Array([
  0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
]);
const PERMUTATION = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];
const CHUNK_START = 1;
const CHUNK_END = 2;
const PARENT = 4;
const ROOT = 8;
const CHUNK_LEN = 1024;
const BLOCK_LEN = 64;

function g(s, a, b, c, d, x, y) {
  s[a] = s[a] + s[b] + x;
  s[d] = rotr(s[d] ^ s[a], 16);
  s[c] = s[c] + s[d];
  s[b] = rotr(s[b] ^ s[c], 12);
  s[a] = s[a] + s[b] + y;
  s[d] = rotr(s[d] ^ s[a], 8);
  s[c] = s[c] + s[d];
  s[b] = rotr(s[b] ^ s[c], 7);
}

function rotr(v, n) {
  return (v >>> n) | (v << (32 - n));
}

/** The compression function: the first 8 words of the result are the chaining value. */
function compress(cv, block, counter, blockLen, flags) {
  const s = new Uint32Array(16);
  s.set(cv, 0);
  s.set(IV.subarray(0, 4), 8);
  s[12] = counter % 0x100000000;
  s[13] = Math.floor(counter / 0x100000000);
  s[14] = blockLen;
  s[15] = flags;
  let m = block;
  for (let round = 0; round < 7; round++) {
    g(s, 0, 4, 8, 12, m[0], m[1]);
    g(s, 1, 5, 9, 13, m[2], m[3]);
    g(s, 2, 6, 10, 14, m[4], m[5]);
    g(s, 3, 7, 11, 15, m[6], m[7]);
    g(s, 0, 5, 10, 15, m[8], m[9]);
    g(s, 1, 6, 11, 12, m[10], m[11]);
    g(s, 2, 7, 8, 13, m[12], m[13]);
    g(s, 3, 4, 9, 14, m[14], m[15]);
    if (round < 6) {
      const next = new Uint32Array(16);
      for (let i = 0; i < 16; i++) next[i] = m[PERMUTATION[i]];
      m = next;
    }
  }
  for (let i = 0; i < 8; i++) {
    s[i] ^= s[i + 8];
    s[i + 8] ^= cv[i];
  }
  return s;
}

/** 64 bytes (zero-padded) as 16 little-endian words. */
function words(bytes, start, end) {
  const block = new Uint32Array(16);
  for (let i = start, w = 0; i < end; i++, w++) {
    block[w >> 2] |= bytes[i] << (8 * (w & 3));
  }
  return block;
}

/** What a node's output is before it is compressed: its root form differs by one flag. */
function node(cv, block, counter, blockLen, flags) {
  return { cv, block, counter, blockLen, flags };
}

function chainingValue(n) {
  return compress(n.cv, n.block, n.counter, n.blockLen, n.flags).slice(0, 8);
}

function parent(left, right) {
  const block = new Uint32Array(16);
  block.set(left, 0);
  block.set(right, 8);
  return node(IV, block, 0, BLOCK_LEN, PARENT);
}

/** The last block of chunk number `counter` (bytes `start..end` of `input`), not compressed. */
function chunkOutput(input, start, end, counter) {
  let cv = IV;
  const blocks = Math.max(1, Math.ceil((end - start) / BLOCK_LEN));
  for (let b = 0; b < blocks; b++) {
    const from = start + b * BLOCK_LEN;
    const to = Math.min(from + BLOCK_LEN, end);
    const flags = (b === 0 ? CHUNK_START : 0) | (b === blocks - 1 ? CHUNK_END : 0);
    const block = words(input, from, to);
    if (b === blocks - 1) return node(cv, block, counter, to - from, flags);
    cv = compress(cv, block, counter, BLOCK_LEN, flags).slice(0, 8);
  }
  throw new Error("unreachable");
}

/** The BLAKE3 hash of `input` (a Uint8Array), as 64 lowercase hex characters. */
export function blake3Hex(input) {
  const chunks = Math.max(1, Math.ceil(input.length / CHUNK_LEN));
  const stack = [];
  let last = null;
  for (let c = 0; c < chunks; c++) {
    const start = c * CHUNK_LEN;
    const out = chunkOutput(input, start, Math.min(start + CHUNK_LEN, input.length), c);
    if (c === chunks - 1) {
      last = out;
      break;
    }
    // A complete chunk that is not the last: merge completed subtrees (one per trailing zero
    // bit of the number of chunks so far).
    let cv = chainingValue(out);
    for (let total = c + 1; (total & 1) === 0; total >>= 1) cv = chainingValue(parent(stack.pop(), cv));
    stack.push(cv);
  }
  let out = last;
  while (stack.length > 0) out = parent(stack.pop(), chainingValue(out));
  const s = compress(out.cv, out.block, out.counter, out.blockLen, out.flags | ROOT);
  let hex = "";
  for (let i = 0; i < 8; i++) {
    for (let byte = 0; byte < 4; byte++) hex += ((s[i] >>> (8 * byte)) & 0xff).toString(16).padStart(2, "0");
  }
  return hex;
}

/** Whether this implementation gives the specification's test values (checked at start). */
export function selfTest() {
  const abc = new TextEncoder().encode("abc");
  return (
    blake3Hex(new Uint8Array(0)) === "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262" &&
    blake3Hex(abc) === "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
  );
}
