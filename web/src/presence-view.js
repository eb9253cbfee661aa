// How a user's presence shows: a dot (list, header, members, friends) and a header subtitle.
import { h, parseTime, shortTime } from './dom.js';
import { people } from './people.js';

const LABELS = { online: 'online', offline: 'offline', unknown: 'presence unknown' };

export function presenceDot(userId) {
  const status = people.presenceOf(userId);
  const label = LABELS[status];
  return h('span', { class: 'dot', role: 'img', 'aria-label': label, title: label, dataset: { status, user: userId } });
}

export function presenceText(userId) {
  const status = people.presenceOf(userId);
  if (status === 'online') return 'online';
  if (status === 'offline') {
    const seen = parseTime(people.lastActiveAt(userId));
    return seen ? `last seen ${shortTime(seen)}` : 'offline';
  }
  return '';
}
