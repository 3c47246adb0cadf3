BEGIN TRANSACTION;
CREATE TABLE channel_peers (channel_id BLOB PRIMARY KEY, peer TEXT NOT NULL);
INSERT INTO "channel_peers" VALUES(X'5424626B932A2FF9D191F0982447A979FDDD8B4BE251E924370CB66900DF018E','aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa');
INSERT INTO "channel_peers" VALUES(X'0202020202020202020202020202020202020202020202020202020202020202','bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb');
COMMIT;
PRAGMA user_version = 1;
