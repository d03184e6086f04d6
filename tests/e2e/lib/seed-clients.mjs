// The seed teams' own client code, as their write-ups (../shared/seeds/) show
// it, with only what a browser or React provides replaced: `WebSocket` is the
// `ws` package, `useState` / `queryClient` / `toast` are recorders, and the URL
// is livehub's. Nothing else is changed — that is the point: these are the
// frontends that must connect unchanged.
import WebSocket from "ws";

globalThis.WebSocket ??= WebSocket;

// --- Seed 001 (chat platform): the `WebSocketClient` class, TypeScript types removed.
export class WebSocketClient {
  constructor(token, base) {
    this.ws = null;
    this.reconnectAttempts = 0;
    this.maxReconnectAttempts = 5;
    this.token = token;
    this.base = base; // 'ws://localhost:8000' in the seed
    this.received = []; // what the seed's empty handlers would show
  }

  connect() {
    const wsUrl = `${this.base}/ws/connect?token=${this.token}&client_type=web`;
    this.ws = new WebSocket(wsUrl);

    this.ws.onopen = () => {
      this.reconnectAttempts = 0;
    };

    this.ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      this.handleMessage(message);
    };

    this.ws.onclose = () => {
      if (!this.stopped) this.reconnect();
    };

    this.ws.onerror = () => {};
  }

  handleMessage(message) {
    this.received.push(message);
    switch (message.type) {
      case "chat_message":
        this.onChatMessage(message);
        break;
      case "order_status_update":
        this.onOrderUpdate(message);
        break;
      case "typing_indicator":
        this.onTypingIndicator(message);
        break;
      case "presence_update":
        this.onPresenceUpdate(message);
        break;
    }
  }

  sendMessage(room, content) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(
        JSON.stringify({
          type: "chat_message",
          room,
          content,
          message_type: "text",
        }),
      );
    }
  }

  joinRoom(room) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(
        JSON.stringify({
          type: "join_room",
          room,
        }),
      );
    }
  }

  reconnect() {
    if (this.reconnectAttempts < this.maxReconnectAttempts) {
      this.reconnectAttempts++;
      const delay = Math.pow(2, this.reconnectAttempts) * 1000; // Exponential backoff
      setTimeout(() => this.connect(), delay);
    }
  }

  onChatMessage(_message) {}
  onOrderUpdate(_message) {}
  onTypingIndicator(_message) {}
  onPresenceUpdate(_message) {}
}

// --- Seed 002 (uploads and notifications): the `useWebSocket` hook's effect and
// the "Handle Messages" switch, with React's state as plain arrays.
export function useUploadSocket(websocketUrl, token) {
  const state = { messages: [], progress: [], uploadMessages: [], toasts: [], errors: [], connected: false };
  const setMessages = (f) => (state.messages = f(state.messages));
  const setUploadProgress = (p) => state.progress.push(p);
  const setUploadMessage = (m) => state.uploadMessages.push(m);
  const toast = (t) => state.toasts.push(t);

  const socket = new WebSocket(`${websocketUrl}?token=${token}`);

  socket.onopen = () => {
    state.connected = true;
  };

  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    setMessages((prev) => [...prev, message]);

    switch (message.type) {
      case "upload_progress":
        // Update progress indicator
        setUploadProgress(message.data.progress);
        setUploadMessage(message.data.message);
        break;

      case "notification":
        // Show toast notification
        toast({
          title: message.data.title,
          description: message.data.message,
          variant: message.data.severity,
        });
        break;

      case "error":
        // Handle error
        state.errors.push(message.data);
        break;
    }
  };

  socket.onclose = () => {
    state.connected = false;
  };

  state.socket = socket;
  return state;
}

// --- Seed 003 (lab equipment): `WebSocketProvider`'s effect, React removed.
export function labWebSocketProvider({ token, WS_URL, queryClient }) {
  const wsRef = { current: null };
  const reconnectTimeoutRef = { current: null };
  const state = { isConnected: false, connects: 0 };

  const connect = () => {
    const ws = new WebSocket(WS_URL);
    wsRef.current = ws;

    ws.onopen = () => {
      state.isConnected = true;
      state.connects++;

      // Authenticate
      ws.send(
        JSON.stringify({
          type: "auth",
          token: token,
        }),
      );
    };

    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);

      // Handle different message types
      switch (message.type) {
        case "equipment_update":
          // Invalidate equipment queries
          queryClient.invalidateQueries(["equipment"]);
          break;

        case "session_update":
          // Invalidate session queries
          queryClient.invalidateQueries(["sessions"]);
          queryClient.invalidateQueries(["my-sessions"]);
          queryClient.invalidateQueries(["active-sessions"]);
          break;

        case "sample_update":
          // Invalidate sample queries
          queryClient.invalidateQueries(["inbox"]);
          queryClient.invalidateQueries(["unread-count"]);
          break;
      }
    };

    ws.onclose = () => {
      state.isConnected = false;

      // Reconnect after 5 seconds
      reconnectTimeoutRef.current = setTimeout(connect, 5000);
    };

    ws.onerror = () => {
      ws.close();
    };
  };

  connect();

  // The effect's cleanup.
  state.cleanup = () => {
    if (reconnectTimeoutRef.current) {
      clearTimeout(reconnectTimeoutRef.current);
    }
    if (wsRef.current) {
      wsRef.current.onclose = null;
      wsRef.current.close();
    }
  };
  return state;
}

/** A stand-in for react-query's client: records every invalidation. */
export function recordingQueryClient() {
  const invalidated = [];
  return { invalidated, invalidateQueries: (key) => invalidated.push(key.join("/")) };
}
