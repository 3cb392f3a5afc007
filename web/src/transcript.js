// The transcript panel: one line per speech segment or chat message, each with its
// speaker's name and a time, kept across calls (a new call adds a separator). Speech lines
// are replaced as their text grows and marked final when the transcript is final.

const list = () => document.getElementById('transcript');
const lines = new Map(); // key -> <li>

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

function scrollIfAtBottom(el, add) {
  const atBottom = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
  add();
  if (atBottom) el.scrollTop = el.scrollHeight;
}

/** A line for key, created on first use: speaker is 'user' | 'agent' | 'other'. */
export function line(key, { speaker, name, identity, kind, timestamp }) {
  let li = lines.get(key);
  if (li) return li;
  li = document.createElement('li');
  li.dataset.speaker = speaker;
  li.dataset.kind = kind;
  li.dataset.identity = identity || '';
  li.dataset.final = 'false';
  const head = document.createElement('span');
  head.className = 'line-head';
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = name;
  const time = document.createElement('time');
  const t = timestamp || Date.now();
  time.dateTime = new Date(t).toISOString();
  time.textContent = clock(t);
  head.append(who, time);
  if (kind === 'chat') {
    const k = document.createElement('span');
    k.className = 'kind';
    k.textContent = 'typed';
    head.append(k);
  }
  const text = document.createElement('span');
  text.className = 'text';
  li.append(head, text);
  lines.set(key, li);
  const el = list();
  scrollIfAtBottom(el, () => el.append(li));
  return li;
}

export function setText(li, text, final) {
  li.querySelector('.text').textContent = text;
  li.dataset.final = final ? 'true' : 'false';
}

/** Drop a line that turned out empty (a turn with no words). */
export function drop(key) {
  lines.get(key)?.remove();
  lines.delete(key);
}

export function separator(text) {
  const li = document.createElement('li');
  li.className = 'separator';
  li.dataset.kind = 'separator';
  li.textContent = `${text} · ${clock(Date.now())}`;
  const el = list();
  scrollIfAtBottom(el, () => el.append(li));
}

const words = (s) => (s || '').replace(/\s+/g, ' ').trim();

/** A recent line from speaker with the same text (the agent may answer on both topics); a
 *  speech line still streaming counts when the text so far begins the same words. */
export function recentDuplicate(speaker, text, withinMs = 15000) {
  const want = words(text);
  const now = Date.now();
  for (const li of [...list().children].slice(-8)) {
    if (li.dataset.speaker !== speaker) continue;
    const t = Date.parse(li.querySelector('time')?.dateTime || '');
    const have = words(li.querySelector('.text')?.textContent);
    const same = have === want || (li.dataset.final !== 'true' && have && want.startsWith(have));
    if (same && now - t < withinMs) return li;
  }
  return null;
}

export function asText() {
  return [...list().children]
    .map((li) => {
      if (li.dataset.kind === 'separator') return `--- ${li.textContent} ---`;
      const who = li.querySelector('.who')?.textContent || '';
      const time = li.querySelector('time')?.textContent || '';
      const typed = li.dataset.kind === 'chat' ? ' (typed)' : '';
      return `[${time}] ${who}${typed}: ${li.querySelector('.text')?.textContent || ''}`;
    })
    .join('\n');
}

export function isEmpty() {
  return list().childElementCount === 0;
}
