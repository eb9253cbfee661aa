// The Hubbub web chat: REST for accounts and history, one MQTT connection for everything live.
// This entry point wires the controls and signs in; README.md maps the modules.
import { bindHandlers } from './forms.js';
import { resume, showAuth } from './session.js';

async function boot() {
  bindHandlers();
  await resume();
}

boot().catch((error) => {
  console.error(error);
  showAuth('Something went wrong while starting. Reload the page to try again.');
});
