// The open conversation's header: title with the peer's presence, subtitle, and for a group the
// member list (the add-member form only for its admins).
import { conversations, peerOf, titleOf } from './conversations.js';
import { byId, h } from './dom.js';
import { openCid } from './open-conversation.js';
import { people } from './people.js';
import { presenceDot, presenceText } from './presence-view.js';

export function renderHeader() {
  const cid = openCid();
  const conv = cid ? conversations.get(cid) : undefined;
  if (!conv) return;
  const meId = people.me.id;
  const peer = peerOf(conv, meId);
  byId('conv-title').replaceChildren(...(peer ? [presenceDot(peer.user_id), ' '] : []), titleOf(conv, meId));
  const tools = byId('group-tools');
  if (conv.type === 'group') {
    const members = conv.members ?? [];
    byId('conv-subtitle').textContent = `${members.length} member${members.length === 1 ? '' : 's'}`;
    tools.hidden = false;
    byId('member-list').replaceChildren(
      ...members.map((member) =>
        h(
          'li',
          { dataset: { user: member.user_id } },
          member.user_id === meId ? h('span', { class: 'dot', dataset: { status: 'self' } }) : presenceDot(member.user_id),
          h('span', { text: member.display_name || member.username }),
          h('span', { class: 'handle', text: `@${member.username}` }),
          member.user_id === meId ? h('span', { class: 'tag', text: 'you' }) : null,
          member.role === 'admin' ? h('span', { class: 'tag', text: 'admin' }) : null,
        ),
      ),
    );
    const admin = members.some((member) => member.user_id === meId && member.role === 'admin');
    byId('member-form').hidden = !admin;
  } else {
    tools.hidden = true;
    byId('conv-subtitle').textContent = peer ? [`@${peer.username}`, presenceText(peer.user_id)].filter(Boolean).join(' · ') : '';
  }
}
