// The friends panel: friends (a button opens the direct chat), requests to answer, requests
// sent. A platform without the friends API (404) hides the panel.
import { ApiError } from './api.js';
import { api } from './backend.js';
import { findUser, startDirectWith } from './conversation-actions.js';
import { byId, h } from './dom.js';
import { showError } from './errors.js';
import { watchPresence } from './live.js';
import { people } from './people.js';
import { presenceDot } from './presence-view.js';

export async function loadFriends() {
  let lists;
  try {
    lists = await api.get('/v1/friends');
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      people.setFriends(null); // a platform without friends
      byId('friends').hidden = true;
      return;
    }
    throw error;
  }
  people.setFriends(lists);
  byId('friends').hidden = false;
  watchPresence();
  renderFriends();
}

export async function askFriend(username) {
  const user = await findUser(username);
  if (people.isMe(user.id)) throw new ApiError(400, 'self_friend', 'That is you.');
  await api.post('/v1/friends/requests', { user_id: user.id });
  await loadFriends();
}

async function answer(path) {
  try {
    await api.post(path);
    await loadFriends();
  } catch (error) {
    showError('sidebar-error', error);
  }
}

export function renderFriends() {
  if (!people.friends) return;
  const { friends, incoming, outgoing } = people.friends;
  const person = (user) => [
    h('span', { class: 'who', text: user.display_name || user.username }),
    h('span', { class: 'handle', text: `@${user.username}` }),
  ];
  byId('friend-requests').replaceChildren(
    ...incoming.map((user) =>
      h(
        'li',
        { dataset: { user: user.id } },
        ...person(user),
        h('button', { type: 'button', text: 'Accept', onclick: () => answer(`/v1/friends/requests/${user.id}/accept`) }),
        h('button', { type: 'button', class: 'link', text: 'Decline', onclick: () => answer(`/v1/friends/requests/${user.id}/decline`) }),
      ),
    ),
    ...outgoing.map((user) => h('li', { dataset: { user: user.id } }, ...person(user), h('span', { class: 'hint', text: 'asked' }))),
  );
  byId('friend-list').replaceChildren(
    ...friends.map((user) =>
      h(
        'li',
        { dataset: { user: user.id } },
        h(
          'button',
          {
            type: 'button',
            class: 'friend',
            title: `Chat with ${user.display_name || user.username}`,
            onclick: () => startDirectWith(user.id).catch((error) => showError('sidebar-error', error)),
          },
          presenceDot(user.id),
          ...person(user),
        ),
      ),
    ),
  );
  byId('no-friends').hidden = friends.length + incoming.length + outgoing.length > 0;
  const badge = byId('friend-badge');
  badge.textContent = incoming.length ? String(incoming.length) : '';
  badge.setAttribute('aria-label', incoming.length ? `${incoming.length} friend request(s)` : '');
}
