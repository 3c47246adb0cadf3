BEGIN TRANSACTION;
CREATE TABLE channels (
            channel_id BLOB PRIMARY KEY,
            state TEXT NOT NULL,
            snapshot TEXT NOT NULL
        , role TEXT NOT NULL DEFAULT '', number INTEGER NOT NULL DEFAULT 0, updated_at INTEGER NOT NULL DEFAULT 0, static TEXT NOT NULL DEFAULT '{}');
INSERT INTO "channels" VALUES(X'5424626B932A2FF9D191F0982447A979FDDD8B4BE251E924370CB66900DF018E','OPEN','{"announcements":[],"best":{"balances":[999000,0],"bets":[],"escrows":[],"fee":1000,"locktime":1000,"next_id":1,"number":0,"signer":"both"},"best_sig":{"$b":"304402200cccdc51a9e384c66741259fe1072d6cf417c99a50bf6cb0c0532b6172c6179a02202929f205e1649c68290c1633331963d66c170731f964e514f3eed3ce517b035201"},"budget_warned":false,"close_raw":{"$b":""},"close_sig":{"$b":""},"current":{"balances":[999000,0],"bets":[],"escrows":[],"fee":1000,"locktime":1000,"next_id":1,"number":0,"signer":"both"},"have_turn":true,"mutual_proposer":"","outbox":[{"fields":{"channel_id":{"$b":"5424626b932a2ff9d191f0982447a979fddd8b4be251e924370cb66900df018e"},"op":{"amount":1234,"kind":"pay"},"signature":{"$b":"3045022100810739aeb8870733cfea80caf59b06047379a55730b72fef479c354ec5a195cf022059e60889803a959dbb119911d7a54774190d588474de150c39a19ca35fa2cc3f01"},"version":{"balances":[997566,1234],"bets":[],"escrows":[],"fee":1200,"locktime":990,"next_id":1,"number":1,"signer":"opener"}},"name":"update"}],"peer_ready":true,"pending":{"balances":[997566,1234],"bets":[],"escrows":[],"fee":1200,"locktime":990,"next_id":1,"number":1,"signer":"opener"},"pending_kind":"update","pending_op":{"amount":1234,"kind":"pay"},"preimages":[],"reanchor":null,"state":"OPEN","turn_requested":false,"turn_seq":0}','opener',0,1796680069,'{"change":[{"script_pubkey":{"$b":"0014ed94b75c64a663ba77e2b571d1a19babbca877fc"},"value":4000}],"channel_id":{"$b":"5424626b932a2ff9d191f0982447a979fddd8b4be251e924370cb66900df018e"},"funding_locktime":100,"funding_raw":{"$b":"020000000111111111111111111111111111111111111111111111111111111111111111110000000000feffffff0240420f0000000000220020778d78e4bed08d80f848d879c49419c891b63c7573cc09a2e728b1c329d638bfa00f000000000000160014ed94b75c64a663ba77e2b571d1a19babbca877fc64000000"},"funding_witnesses":{"0":[{"$b":"3045022100c15f8a8feb9efb9fd4ca4992046983380902dbd42ed88bd8875280603a4acdf00220577a2d17402138f160f1f86a272b97757df3a963a23faec40caf48ffd56f52aa01"},{"$b":"033cddbc43001d4f8fbe0986ef6b1f945946fa7411afc2d5dff8c0c75118f51962"}]},"inputs":[{"script_pubkey":{"$b":"0014ed94b75c64a663ba77e2b571d1a19babbca877fc"},"txid":"1111111111111111111111111111111111111111111111111111111111111111","value":1005000,"vout":0}],"params":{"acceptor_contribution":0,"escrow_delta":20,"fee_step":200,"initial_fee":1000,"lifetime":1000,"locktime_step":10,"low_switch_warning":3,"max_contracts":8,"max_payment":200000,"min_depth":1,"opener_contribution":1000000,"reserve":0,"safety_margin":6},"payout_script":{"$b":"001488855115ce383ad6a4ac05fd9953df5b7fe462b8"},"pubkey":{"$b":"029aad65edd673fde59ac3e9b7e4094081c09fcdc0684f3318e921361b5bf5d4fe"},"remote_change":[],"remote_inputs":[],"remote_payout":{"$b":"001456686e2ab702bed655e4d21a664d7f46cf066f97"},"remote_pubkey":{"$b":"038e22b523334741019315fdc20362b6cac58eaa7b22eff1fac219b77a12ff6212"},"role":"opener","schema":1,"setup":{"capacity":1000000,"funding_txid":"b62b4a11dd10a41f815a2dabfdcb5cc4ff44c92509ec1ecb65f6efc2a5df2c5e","funding_vout":0,"payout_scripts":[{"$b":"001488855115ce383ad6a4ac05fd9953df5b7fe462b8"},{"$b":"001456686e2ab702bed655e4d21a664d7f46cf066f97"}],"pubkeys":[{"$b":"029aad65edd673fde59ac3e9b7e4094081c09fcdc0684f3318e921361b5bf5d4fe"},{"$b":"038e22b523334741019315fdc20362b6cac58eaa7b22eff1fac219b77a12ff6212"}]}}');
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
INSERT INTO "payments" VALUES('old-pay',X'5424626B932A2FF9D191F0982447A979FDDD8B4BE251E924370CB66900DF018E',1234,'PENDING',1,1.79668006956733894343e+09,1.79668006956733894343e+09,'');
CREATE TABLE versions (
            channel_id BLOB NOT NULL,
            number INTEGER NOT NULL,
            txid TEXT NOT NULL,
            version TEXT NOT NULL,
            peer_signature BLOB,
            PRIMARY KEY (channel_id, number)
        );
INSERT INTO "versions" VALUES(X'5424626B932A2FF9D191F0982447A979FDDD8B4BE251E924370CB66900DF018E',1,'aa8c54d7a91b4c7700d9b80d340291bf53b172bf2371bcca1b88ca90c31cc4a7','{"balances":[997566,1234],"bets":[],"escrows":[],"fee":1200,"locktime":990,"next_id":1,"number":1,"signer":"opener"}',NULL);
CREATE INDEX versions_by_txid ON versions (txid);
CREATE INDEX payments_by_state ON payments (state);
COMMIT;
PRAGMA user_version = 4;
