// The page's controls wired to what they do: every form submits through onSubmit (its button
// disabled meanwhile, its error line filled on failure), plus keys, scrolling and navigation.
import { ApiError } from './api.js';
import { addMember, createGroup, leaveGroup, startDirect } from './conversation-actions.js';
import { autoGrow, noteTyping, send } from './composer.js';
import { byId } from './dom.js';
import { showError } from './errors.js';
import { askFriend } from './friends.js';
import { loadOlder, markRead } from './history.js';
import { isReading, openCid } from './open-conversation.js';
import { route } from './router.js';
import { logIn, logOut, signUp } from './session.js';

function onSubmit(formId, errorId, action) {
  const form = byId(formId);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    byId(errorId).textContent = '';
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    try {
      await action(form);
    } catch (error) {
      showError(errorId, error);
    } finally {
      button.disabled = false;
    }
  });
}

/** The sign-up form's first invalid field, as an ApiError naming its label. */
function invalidField(form) {
  const bad = form.querySelector(':invalid');
  bad?.focus();
  const label = form.querySelector(`label[for="${bad?.id}"]`)?.textContent ?? 'A field';
  return new ApiError(400, 'invalid', `${label.replace(/\s*\(optional\)/, '')}: ${bad?.validationMessage ?? 'invalid'}`);
}

export function bindHandlers() {
  onSubmit('login-form', 'login-error', async () => {
    const username = byId('login-username').value.trim();
    const password = byId('login-password').value;
    if (!username || !password) throw new ApiError(400, 'invalid', 'Enter your username and password.');
    await logIn(username, password);
    byId('login-password').value = '';
  });
  onSubmit('signup-form', 'signup-error', async (form) => {
    if (!form.checkValidity()) throw invalidField(form);
    const username = byId('signup-username').value.trim();
    await signUp(username, byId('signup-password').value, byId('signup-display-name').value.trim());
    byId('signup-password').value = '';
  });
  onSubmit('direct-form', 'sidebar-error', async () => {
    await startDirect(byId('direct-username').value);
    byId('direct-username').value = '';
    byId('new-direct').open = false;
  });
  onSubmit('group-form', 'sidebar-error', async () => {
    const title = byId('group-title').value.trim();
    if (!title) throw new ApiError(400, 'invalid', 'Give the group a name.');
    await createGroup(title, byId('group-members').value);
    byId('group-title').value = '';
    byId('group-members').value = '';
    byId('new-group').open = false;
  });
  onSubmit('friend-form', 'sidebar-error', async () => {
    await askFriend(byId('friend-username').value);
    byId('friend-username').value = '';
  });
  onSubmit('member-form', 'conv-error', async () => {
    await addMember(byId('member-username').value);
    byId('member-username').value = '';
  });
  onSubmit('composer', 'conv-error', async () => send());
  byId('leave-group').addEventListener('click', () => leaveGroup().catch((error) => showError('conv-error', error)));
  byId('logout').addEventListener('click', () => logOut());
  byId('use-here').addEventListener('click', () => location.reload());

  const input = byId('composer-input');
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      send();
    }
  });
  input.addEventListener('input', () => {
    autoGrow();
    noteTyping();
  });
  byId('messages').addEventListener('scroll', () => {
    if (byId('messages').scrollTop < 200) loadOlder();
  }, { passive: true });
  window.addEventListener('hashchange', route);
  document.addEventListener('visibilitychange', () => {
    const cid = openCid();
    if (cid && isReading(cid)) markRead();
  });
}
