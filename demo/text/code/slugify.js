'use strict';

const REPLACEMENTS = { 'ß': 'ss', 'æ': 'ae', 'ø': 'o', 'œ': 'oe', '&': ' and ' };

/**
 * Turns a title into a URL slug: lower case ASCII words joined by dashes.
 * Accents are stripped with Unicode normalization rather than a lookup table.
 */
function slugify(title, maxLength = 60) {
  let text = title.toLowerCase();
  for (const [from, to] of Object.entries(REPLACEMENTS)) {
    text = text.split(from).join(to);
  }
  text = text.normalize('NFKD').replace(/[\u0300-\u036f]/g, '');
  const words = text.match(/[a-z0-9]+/g) || [];
  let slug = '';
  for (const word of words) {
    const next = slug ? `${slug}-${word}` : word;
    if (next.length > maxLength) break;
    slug = next;
  }
  return slug;
}

/** Makes slugs unique within one site by appending -2, -3 and so on. */
function uniqueSlugs(titles) {
  const seen = new Map();
  return titles.map((title) => {
    const base = slugify(title) || 'untitled';
    const n = (seen.get(base) || 0) + 1;
    seen.set(base, n);
    return n === 1 ? base : `${base}-${n}`;
  });
}

module.exports = { slugify, uniqueSlugs };

if (require.main === module) {
  console.log(uniqueSlugs(['Crème brûlée & Co.', 'Straße der Bäume', 'Crème Brûlée & co']));
}
