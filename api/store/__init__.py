"""The account store: the SQL tables' queries, and the adapters other components use.

The broker reads memberships, relations and last activity through ``SqlDirectory``
(``hubbub.stores.Directory``) and checks that a device is still signed in through
``SqlDeviceSessions`` (``hubbub.sessions.DeviceSessions``); the notifier reads its audience
through ``SqlPushDirectory`` (``hubbub.stores.PushDirectory``). The API's routers use the
query modules: ``accounts`` (users, devices, refresh tokens), ``conversations`` (members,
read markers, device cursors) and ``friends``.

Who commits, the one rule: **whoever opens the session commits it; query functions never do.**
A query function adds, changes and flushes (so constraint violations surface at once), and
several compose into one transaction. For a request the session is opened by the
``api.deps.SessionDep`` dependency, which commits when the handler returns and rolls back if
it raises; a handler commits earlier itself only where something must follow the commit
(an inbox event, a broker told to end a device), so nobody hears of a change that is not
stored. Each adapter method opens its own session and commits it before returning.
"""

from api.store.directory import SqlDirectory
from api.store.push import SqlPushDirectory
from api.store.sessions import SqlDeviceSessions

__all__ = ["SqlDeviceSessions", "SqlDirectory", "SqlPushDirectory"]
