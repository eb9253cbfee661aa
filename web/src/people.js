// Who the page knows: the signed-in user, names for ids, presence, and the friend lists.

export class People {
  constructor() {
    this.reset();
  }

  /** Signed out: forget everyone. */
  reset() {
    /** @type {{id: string, username: string, display_name: string}|null} */
    this.me = null;
    /** @type {Map<string, {username: string, display_name: string}>} */
    this.users = new Map();
    /** @type {Map<string, {status?: string, last_active_at?: unknown}>} */
    this.presence = new Map();
    /** @type {{friends: any[], incoming: any[], outgoing: any[]}|null} null: no friends API here */
    this.friends = null;
  }

  signIn(me) {
    this.me = me;
    this.users.set(me.id, me);
  }

  isMe(userId) {
    return userId === this.me?.id;
  }

  remember(userId, user) {
    this.users.set(userId, { username: user.username, display_name: user.display_name });
  }

  nameOf(userId) {
    const user = this.users.get(userId);
    return user?.display_name || user?.username || 'Someone';
  }

  /** A retained `presence/{uid}` body (empty when it was cleared). */
  setPresence(userId, body) {
    this.presence.set(userId, body ?? {});
  }

  /** @returns {'online'|'offline'|'unknown'} */
  presenceOf(userId) {
    const status = this.presence.get(userId)?.status;
    return status === 'online' || status === 'offline' ? status : 'unknown';
  }

  lastActiveAt(userId) {
    return this.presence.get(userId)?.last_active_at;
  }

  /** The friend lists (null: this platform has no friends API); their names are remembered. */
  setFriends(lists) {
    this.friends = lists;
    if (!lists) return;
    for (const user of [...lists.friends, ...lists.incoming, ...lists.outgoing]) this.remember(user.id, user);
  }

  /** Everyone whose presence dot shows: my friends and the other members of these conversations. */
  watched(conversations) {
    const ids = new Set((this.friends?.friends ?? []).map((friend) => friend.id));
    for (const conv of conversations) {
      for (const member of conv.members ?? []) if (!this.isMe(member.user_id)) ids.add(member.user_id);
    }
    return ids;
  }
}

export const people = new People();
