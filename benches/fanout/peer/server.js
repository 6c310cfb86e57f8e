// The seed's own stack for the side-by-side benchmark: Node.js + `ws`, speaking the
// subset of docs/protocol.md that benches/fanout's load needs — CONNECTED, mutations
// applied per entity with a version, ACK to the sender, REALTIME_EVENT with a per-
// workspace seq to every other session of the workspace. No auth check (the JWT's
// payload is read, its signature is not: a cost the peer is spared), no history,
// presence, limits or heartbeats. `PORT=0 node server.js` prints the port it took.
'use strict';
const http = require('http');
const { WebSocketServer } = require('ws');

const epoch = Date.now();
const workspaces = new Map();
let nextConn = 0;

function workspace(id) {
  let w = workspaces.get(id);
  if (!w) {
    w = { seq: 0, entities: new Map(), sessions: new Set() };
    workspaces.set(id, w);
  }
  return w;
}

const server = http.createServer((req, res) => {
  if (req.url === '/healthz') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ status: 'ok', epoch, connections: nextConn }));
  } else {
    res.statusCode = 404;
    res.end();
  }
});
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });

server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://peer');
  let claims;
  try {
    claims = JSON.parse(Buffer.from((url.searchParams.get('token') || '').split('.')[1], 'base64url'));
  } catch {
    socket.end('HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n');
    return;
  }
  if (url.pathname !== '/ws' || !claims.sub || !claims.ws) {
    socket.end('HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n');
    return;
  }
  const sessionId = url.searchParams.get('sessionId') || `s${nextConn + 1}`;
  wss.handleUpgrade(req, socket, head, (ws) => connect(ws, claims, sessionId));
});

function connect(ws, claims, sessionId) {
  const w = workspace(claims.ws);
  const me = { ws, user: claims.sub, sessionId };
  w.sessions.add(me);
  nextConn += 1;
  ws.send(JSON.stringify({
    type: 'CONNECTED',
    payload: {
      userId: claims.sub, sessionId, connectionId: String(nextConn), workspaceId: claims.ws,
      epoch, seq: w.seq, heartbeatMs: 30000, serverTime: new Date().toISOString(),
    },
  }));
  ws.on('message', (data) => {
    let m;
    try { m = JSON.parse(data); } catch { return; }
    const ev = m && m.type === 'REALTIME_EVENT' ? m.payload : null;
    if (!ev || typeof ev.type !== 'string' || !ev.type.startsWith('TASK_')) return;
    const p = ev.payload || {};
    let e = w.entities.get(p.id);
    if (!e) {
      e = { id: p.id, entity: 'TASK', version: 0 };
      w.entities.set(p.id, e);
    }
    Object.assign(e, p.changes || {});
    e.version += 1;
    e.updatedAt = new Date().toISOString();
    e.updatedBy = claims.sub;
    e.opId = p.opId;
    const seq = ++w.seq;
    ws.send(JSON.stringify({
      type: 'ACK',
      payload: { opId: p.opId, entity: 'TASK', entityId: p.id, version: e.version, seq, epoch },
    }));
    const out = JSON.stringify({
      type: 'REALTIME_EVENT',
      seq,
      payload: {
        id: `E:${seq}`, type: ev.type, payload: e, userId: claims.sub, sessionId,
        timestamp: e.updatedAt, version: e.version,
      },
    });
    for (const s of w.sessions) {
      if (s !== me && !(s.user === claims.sub && s.sessionId === sessionId)) s.ws.send(out);
    }
  });
  ws.on('close', () => w.sessions.delete(me));
  ws.on('error', () => w.sessions.delete(me));
}

server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  console.log(`listening on ${server.address().port}`);
});
