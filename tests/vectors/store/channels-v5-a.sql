BEGIN TRANSACTION;
CREATE TABLE channel_peers (channel_id BLOB PRIMARY KEY, peer TEXT NOT NULL);
CREATE TABLE channels (
            channel_id BLOB PRIMARY KEY,
            state TEXT NOT NULL,
            snapshot TEXT NOT NULL
        , role TEXT NOT NULL DEFAULT '', number INTEGER NOT NULL DEFAULT 0, updated_at INTEGER NOT NULL DEFAULT 0, static TEXT NOT NULL DEFAULT '{}');
INSERT INTO "channels" VALUES(X'5424626B932A2FF9D191F0982447A979FDDD8B4BE251E924370CB66900DF018E','OPEN','{"announcements":[],"best":{"balances":[993831,104369],"bets":[],"escrows":[],"fee":1800,"locktime":1960,"next_id":1,"number":5,"signer":"acceptor"},"best_sig":{"$b":"30440220496f5975aa75cdbfaadf231556f9b8765b98e71730a68033cf9cc06d7b6400ac0220036287f7ee66a63e28bbef89e6ef497884615fb44af61805061e8351c6cfef6201"},"budget_warned":false,"close_raw":{"$b":""},"close_sig":{"$b":""},"current":{"balances":[993622,104378],"bets":[],"escrows":[],"fee":2000,"locktime":1950,"next_id":1,"number":6,"signer":"opener"},"have_turn":false,"mutual_proposer":"","outbox":[{"fields":{"channel_id":{"$b":"5424626b932a2ff9d191f0982447a979fddd8b4be251e924370cb66900df018e"},"number":5},"name":"turn_grant"}],"peer_ready":true,"pending":null,"pending_kind":"","pending_op":null,"preimages":[],"reanchor":null,"state":"OPEN","turn_requested":false,"turn_seq":5}','opener',6,1796688242,'{"change":[{"script_pubkey":{"$b":"0014ed94b75c64a663ba77e2b571d1a19babbca877fc"},"value":4000}],"channel_id":{"$b":"5424626b932a2ff9d191f0982447a979fddd8b4be251e924370cb66900df018e"},"funding_locktime":100,"funding_raw":{"$b":"020000000211111111111111111111111111111111111111111111111111111111111111110000000000feffffff22222222222222222222222222222222222222222222222222222222222222220100000000feffffff03e0c8100000000000220020778d78e4bed08d80f848d879c49419c891b63c7573cc09a2e728b1c329d638bfd0070000000000001600148b9957872ee91b35599e5cd3fe942bb4f26801cea00f000000000000160014ed94b75c64a663ba77e2b571d1a19babbca877fc64000000"},"funding_witnesses":{"0":[{"$b":"30440220609306779d1bb3c556dbfbe7d95a59f8449127689b0601f5444e552e57eba1b202204a09617a586d598aba21e0bc6bb858f57623246fb7dc663e0b6eb4f06310f20c01"},{"$b":"033cddbc43001d4f8fbe0986ef6b1f945946fa7411afc2d5dff8c0c75118f51962"}],"1":[{"$b":"304402206660a8a5e0e45f68f0b4aaebf4770f82f7d23616d485687a49b47398ee8971bf022015de92ad951a847f2aec58bb75a720c90123b233fd88ce7d07607eba6a73e76e01"},{"$b":"03862bfbd15794f2c701f4c2a0d6410b57ac3abb035ed281a03dc603808235e219"}]},"inputs":[{"script_pubkey":{"$b":"0014ed94b75c64a663ba77e2b571d1a19babbca877fc"},"txid":"1111111111111111111111111111111111111111111111111111111111111111","value":1005000,"vout":0}],"params":{"acceptor_contribution":100000,"escrow_delta":20,"fee_step":200,"initial_fee":1000,"lifetime":2000,"locktime_step":10,"low_switch_warning":3,"max_contracts":8,"max_payment":200000,"min_depth":1,"opener_contribution":1000000,"reserve":0,"safety_margin":6},"payout_script":{"$b":"001488855115ce383ad6a4ac05fd9953df5b7fe462b8"},"pubkey":{"$b":"029aad65edd673fde59ac3e9b7e4094081c09fcdc0684f3318e921361b5bf5d4fe"},"remote_change":[{"script_pubkey":{"$b":"00148b9957872ee91b35599e5cd3fe942bb4f26801ce"},"value":2000}],"remote_inputs":[{"script_pubkey":{"$b":"00148b9957872ee91b35599e5cd3fe942bb4f26801ce"},"txid":"2222222222222222222222222222222222222222222222222222222222222222","value":103000,"vout":1}],"remote_payout":{"$b":"001456686e2ab702bed655e4d21a664d7f46cf066f97"},"remote_pubkey":{"$b":"038e22b523334741019315fdc20362b6cac58eaa7b22eff1fac219b77a12ff6212"},"role":"opener","schema":1,"setup":{"capacity":1100000,"funding_txid":"9f9602744254ff93e61bb2e442ff7f986533e9fe239a950a6e504c63735792af","funding_vout":0,"payout_scripts":[{"$b":"001488855115ce383ad6a4ac05fd9953df5b7fe462b8"},{"$b":"001456686e2ab702bed655e4d21a664d7f46cf066f97"}],"pubkeys":[{"$b":"029aad65edd673fde59ac3e9b7e4094081c09fcdc0684f3318e921361b5bf5d4fe"},{"$b":"038e22b523334741019315fdc20362b6cac58eaa7b22eff1fac219b77a12ff6212"}]}}');
CREATE TABLE payments (
            id TEXT PRIMARY KEY,
            channel_id BLOB NOT NULL,
            amount INTEGER NOT NULL,
            state TEXT NOT NULL,
            number INTEGER NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            error TEXT NOT NULL DEFAULT ''
        );
CREATE TABLE versions (
            channel_id BLOB NOT NULL,
            number INTEGER NOT NULL,
            txid TEXT NOT NULL,
            version TEXT NOT NULL,
            peer_signature BLOB,
            PRIMARY KEY (channel_id, number)
        );
INSERT INTO "versions" VALUES(X'5424626B932A2FF9D191F0982447A979FDDD8B4BE251E924370CB66900DF018E',0,'782b9630ff913be36a4afdc36fdf23f1027889a4977b4e97c5f96b5959f3716c','{"balances":[999000,100000],"bets":[],"escrows":[],"fee":1000,"locktime":2000,"next_id":1,"number":0,"signer":"both"}',X'3044022025A2DF100F46D1A145DA1C84A7B88BE455255A5AB67063D425597F0B504CFA0F02206F6A16FC5EA9E20E550F1EB658BA2CE8688117E8B731C2300EEA0E065FE44D0401');
INSERT INTO "versions" VALUES(X'5424626B932A2FF9D191F0982447A979FDDD8B4BE251E924370CB66900DF018E',1,'ab53638bd57bbfa1b9affd6b5f2c89c8a3f293e34aa0c43bf840b7e889e8db8e','{"balances":[993800,105000],"bets":[],"escrows":[],"fee":1200,"locktime":1990,"next_id":1,"number":1,"signer":"opener"}',NULL);
INSERT INTO "versions" VALUES(X'5424626B932A2FF9D191F0982447A979FDDD8B4BE251E924370CB66900DF018E',2,'d286a0a95297c31b7256ed9238faed52fa3112e44bf52c0cfee6ea2b5f9b12ea','{"balances":[994100,104500],"bets":[],"escrows":[],"fee":1400,"locktime":1980,"next_id":1,"number":2,"signer":"acceptor"}',X'3045022100EFF122F37F85D05315756D66836D9AC10877A624DB252C406A00F788044E6F2F02201FE0B9FCA63E666E259BE080FC864174DFE04034C72143826A3E3BCAFACAE43801');
INSERT INTO "versions" VALUES(X'5424626B932A2FF9D191F0982447A979FDDD8B4BE251E924370CB66900DF018E',3,'f165fd3fadccb734ebfd613186387303ccddd27bd3adb9fe3cc9f60e7362888c','{"balances":[993830,104570],"bets":[],"escrows":[],"fee":1600,"locktime":1970,"next_id":1,"number":3,"signer":"opener"}',NULL);
INSERT INTO "versions" VALUES(X'5424626B932A2FF9D191F0982447A979FDDD8B4BE251E924370CB66900DF018E',4,'3667c5b0e0d60196902f024eb35291453d2742c67b71591972c5c8d3c049af37','{"balances":[993829,104571],"bets":[],"escrows":[],"fee":1600,"locktime":1970,"next_id":1,"number":4,"signer":"opener"}',NULL);
INSERT INTO "versions" VALUES(X'5424626B932A2FF9D191F0982447A979FDDD8B4BE251E924370CB66900DF018E',5,'f35011d767264cc0d72432d21e9fde3235ed767c058d16acdae1242af5c2d5f1','{"balances":[993831,104369],"bets":[],"escrows":[],"fee":1800,"locktime":1960,"next_id":1,"number":5,"signer":"acceptor"}',X'30440220496F5975AA75CDBFAADF231556F9B8765B98E71730A68033CF9CC06D7B6400AC0220036287F7EE66A63E28BBEF89E6EF497884615FB44AF61805061E8351C6CFEF6201');
INSERT INTO "versions" VALUES(X'5424626B932A2FF9D191F0982447A979FDDD8B4BE251E924370CB66900DF018E',6,'49d22a757b3b9174f90fa191e978cb20e7589c8b4248c8b9465cfc8bb8b72b2b','{"balances":[993622,104378],"bets":[],"escrows":[],"fee":2000,"locktime":1950,"next_id":1,"number":6,"signer":"opener"}',NULL);
CREATE INDEX versions_by_txid ON versions (txid);
CREATE INDEX payments_by_state ON payments (state);
COMMIT;
PRAGMA user_version = 5;
