// Presence of one process alone: a map per topic, in insertion order (so a truncated list shows the longest
// present first). No expiry: a process that dies takes its presence with it.
import type { Presence, PresenceEntry, PresenceList, PresenceStats } from "./presence.ts";

export class MemoryPresence implements Presence {
  private readonly topics = new Map<string, Map<string, PresenceEntry>>();
  private entries = 0;

  add(topic: string, entry: PresenceEntry): boolean {
    let members = this.topics.get(topic);
    if (members === undefined) this.topics.set(topic, (members = new Map()));
    const fresh = !members.has(entry.connectionId);
    members.set(entry.connectionId, entry);
    if (fresh) this.entries++;
    return fresh;
  }

  remove(topic: string, connectionId: string): PresenceEntry | undefined {
    const members = this.topics.get(topic);
    const entry = members?.get(connectionId);
    if (entry === undefined) return undefined;
    members!.delete(connectionId);
    if (members!.size === 0) this.topics.delete(topic);
    this.entries--;
    return entry;
  }

  list(topic: string, max: number, maxBytes = Infinity): PresenceList {
    const clients: PresenceEntry[] = [];
    const members = this.topics.get(topic);
    if (members === undefined) return { clients, truncated: false };
    let bytes = 0;
    for (const entry of members.values()) {
      bytes += entry.info === undefined ? 64 : 64 + JSON.stringify(entry.info).length; // id and user, then info
      if (clients.length === max || bytes > maxBytes) return { clients, truncated: true };
      clients.push(entry);
    }
    return { clients, truncated: false };
  }

  stats(topic: string): PresenceStats {
    const members = this.topics.get(topic);
    if (members === undefined) return { clients: 0, users: 0 };
    const users = new Set<string>();
    for (const entry of members.values()) if (entry.user !== null) users.add(entry.user);
    return { clients: members.size, users: users.size };
  }

  /** The entries of `topic` by connection id (undefined when it has none). */
  members(topic: string): ReadonlyMap<string, PresenceEntry> | undefined {
    return this.topics.get(topic);
  }

  /** Every topic with entries, and its entries. */
  held(): IterableIterator<[string, ReadonlyMap<string, PresenceEntry>]> {
    return this.topics.entries();
  }

  gauges(): Record<string, number> {
    return { entries: this.entries, topics: this.topics.size };
  }
}
