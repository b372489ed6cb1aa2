import { describe, expect, it } from 'vitest';
import {
  captureDdl,
  changelogSql,
  keyConverter,
  keyFromText,
  keyText,
  missingCapture,
  triggerName,
} from '../../src/db/mysql/capture.js';
import { positionWindowSql } from '../../src/db/mysql/sql.js';
import type { NativeColumn } from '../../src/db/mysql/types.js';
import type { ColumnInfo } from '../../src/db/types.js';
import { ConfigError } from '../../src/errors.js';

const TABLE_DDL = `CREATE TABLE IF NOT EXISTS \`deltasync_changelog\` (
  log_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  table_name VARCHAR(255) NOT NULL,
  op CHAR(1) NOT NULL,
  key_values TEXT NOT NULL,
  changed_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  KEY table_name_log_id (table_name, log_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`;

const ID: ColumnInfo = { name: 'id', type: 'int', nativeType: 'int(11)' };

function native(
  name: string,
  dataType: string,
  columnType = dataType,
  extra: Partial<NativeColumn> = {},
): NativeColumn {
  return { name, dataType, columnType, jsonChecked: false, ...extra };
}

describe('mysql captureDdl', () => {
  it('creates the change log and one trigger per event, replacing them on MariaDB', () => {
    const ddl = captureDdl(
      { changelog: 'deltasync_changelog', tables: [{ table: 'children', key: [ID] }] },
      { flavor: 'mariadb', database: 'app' },
    );
    const log = 'INSERT INTO `deltasync_changelog` (table_name, op, key_values) VALUES';
    expect(ddl.install).toEqual([
      TABLE_DDL,
      'CREATE OR REPLACE TRIGGER `deltasync_changelog_children_ins` AFTER INSERT ON `children` FOR EACH ROW ' +
        `${log} ('children', 'I', JSON_ARRAY(CAST(NEW.\`id\` AS CHAR)))`,
      'CREATE OR REPLACE TRIGGER `deltasync_changelog_children_upd` AFTER UPDATE ON `children` FOR EACH ROW ' +
        `BEGIN ${log} ('children', 'U', JSON_ARRAY(CAST(NEW.\`id\` AS CHAR))); ` +
        'IF NOT (OLD.`id` <=> NEW.`id`) THEN ' +
        `${log} ('children', 'D', JSON_ARRAY(CAST(OLD.\`id\` AS CHAR))); END IF; END`,
      'CREATE OR REPLACE TRIGGER `deltasync_changelog_children_del` AFTER DELETE ON `children` FOR EACH ROW ' +
        `${log} ('children', 'D', JSON_ARRAY(CAST(OLD.\`id\` AS CHAR)))`,
    ]);
    expect(ddl.remove).toEqual([
      'DROP TRIGGER IF EXISTS `deltasync_changelog_children_ins`',
      'DROP TRIGGER IF EXISTS `deltasync_changelog_children_upd`',
      'DROP TRIGGER IF EXISTS `deltasync_changelog_children_del`',
      'DROP TABLE IF EXISTS `deltasync_changelog`',
    ]);
  });

  it('drops then creates on MySQL, which has no CREATE OR REPLACE TRIGGER', () => {
    const ddl = captureDdl(
      { changelog: 'log', tables: [{ table: 't', key: [ID] }] },
      { flavor: 'mysql', database: 'app' },
    );
    const maria = captureDdl(
      { changelog: 'log', tables: [{ table: 't', key: [ID] }] },
      { flavor: 'mariadb', database: 'app' },
    );
    expect(ddl.install).toEqual([
      maria.install[0],
      'DROP TRIGGER IF EXISTS `log_t_ins`',
      maria.install[1]!.replace('CREATE OR REPLACE TRIGGER', 'CREATE TRIGGER'),
      'DROP TRIGGER IF EXISTS `log_t_upd`',
      maria.install[2]!.replace('CREATE OR REPLACE TRIGGER', 'CREATE TRIGGER'),
      'DROP TRIGGER IF EXISTS `log_t_del`',
      maria.install[3]!.replace('CREATE OR REPLACE TRIGGER', 'CREATE TRIGGER'),
    ]);
    expect(ddl.remove).toEqual(maria.remove);
  });

  it('logs composite keys of awkward types as exact, session-independent text', () => {
    const key: ColumnInfo[] = [
      { name: 'order_id', type: 'bigint', nativeType: 'bigint(20) unsigned' },
      { name: 'at', type: 'timestamptz', nativeType: 'timestamp(6)' },
      { name: 'tag', type: 'binary', nativeType: 'varbinary(16)' },
      { name: 'flag', type: 'bool', nativeType: 'bit(1)' },
      { name: 'day', type: 'date', nativeType: 'date' },
    ];
    expect(key.map((k) => keyText('NEW', k))).toEqual([
      'CAST(NEW.`order_id` AS CHAR)',
      "CAST(TIMESTAMPADD(MICROSECOND, UNIX_TIMESTAMP(NEW.`at`) * 1000000, '1970-01-01 00:00:00') AS CHAR)",
      'HEX(NEW.`tag`)',
      'CAST(NEW.`flag` + 0 AS CHAR)',
      'CAST(NEW.`day` AS CHAR)',
    ]);
    // Without the native type, the logical type decides.
    expect(keyText('OLD', { name: 'ts', type: 'timestamptz' })).toBe(
      "CAST(TIMESTAMPADD(MICROSECOND, UNIX_TIMESTAMP(OLD.`ts`) * 1000000, '1970-01-01 00:00:00') AS CHAR)",
    );
    const ddl = captureDdl(
      { changelog: 'deltasync_changelog', tables: [{ table: 'lines', key }] },
      { flavor: 'mariadb', database: 'app' },
    );
    expect(ddl.install[2]).toContain(
      'IF NOT (OLD.`order_id` <=> NEW.`order_id` AND OLD.`at` <=> NEW.`at` AND OLD.`tag` <=> NEW.`tag` AND OLD.`flag` <=> NEW.`flag` AND OLD.`day` <=> NEW.`day`)',
    );
  });

  it('puts triggers beside a qualified table and points them at the connection’s change log', () => {
    const ddl = captureDdl(
      { changelog: 'deltasync_changelog', tables: [{ table: 'shop.orders', key: [ID] }] },
      { flavor: 'mariadb', database: 'app' },
    );
    expect(ddl.install[1]).toBe(
      'CREATE OR REPLACE TRIGGER `shop`.`deltasync_changelog_orders_ins` AFTER INSERT ON `shop`.`orders` FOR EACH ROW ' +
        "INSERT INTO `app`.`deltasync_changelog` (table_name, op, key_values) VALUES ('shop.orders', 'I', JSON_ARRAY(CAST(NEW.`id` AS CHAR)))",
    );
    expect(ddl.remove[0]).toBe('DROP TRIGGER IF EXISTS `shop`.`deltasync_changelog_orders_ins`');
  });

  it('quotes names safely and refuses what it cannot', () => {
    const ddl = captureDdl(
      { changelog: 'log', tables: [{ table: "o'brien`s", key: [{ name: 'k`1', type: 'text' }] }] },
      { flavor: 'mariadb', database: null },
    );
    expect(ddl.install[1]).toBe(
      "CREATE OR REPLACE TRIGGER `log_o'brien``s_ins` AFTER INSERT ON `o'brien``s` FOR EACH ROW " +
        "INSERT INTO `log` (table_name, op, key_values) VALUES ('o''brien`s', 'I', JSON_ARRAY(CAST(NEW.`k``1` AS CHAR)))",
    );
    expect(() =>
      captureDdl(
        { changelog: 'log', tables: [{ table: 'a\\b', key: [ID] }] },
        { flavor: 'mariadb', database: null },
      ),
    ).toThrow(ConfigError);
    expect(() =>
      captureDdl(
        { changelog: 'log', tables: [{ table: 't', key: [] }] },
        { flavor: 'mariadb', database: null },
      ),
    ).toThrow(/needs a key/);
  });

  it('keeps trigger names within 64 characters, distinct per table', () => {
    const long = 'a_table_name_that_goes_on_and_on_and_on_for_quite_a_while';
    const name = triggerName('deltasync_changelog', long, 'upd');
    expect(name).toHaveLength(64);
    expect(name).toMatch(/^deltasync_changelog_a_table_name_.*_[0-9a-f]{8}_upd$/);
    expect(triggerName('deltasync_changelog', `${long}2`, 'upd')).not.toBe(name);
    expect(triggerName('audit.log', 'app.t', 'ins')).toBe('log_t_ins');
  });
});

describe('mysql change log reads', () => {
  it('casts key text back to each key column’s own type', () => {
    const text = 'x';
    expect(
      [
        native('a', 'int', 'int(11)'),
        native('b', 'bigint', 'bigint(20) unsigned'),
        native('c', 'year', 'year(4)'),
        native('d', 'bit', 'bit(1)'),
        native('e', 'decimal', 'decimal(38,10) unsigned'),
        native('f', 'double'),
        native('g', 'date'),
        native('h', 'time', 'time(3)'),
        native('i', 'datetime', 'datetime(6)'),
        native('j', 'timestamp', 'timestamp'),
        native('k', 'varbinary', 'varbinary(16)'),
        native('l', 'varchar', 'varchar(20)', {
          charset: 'latin1',
          collation: 'latin1_swedish_ci',
        }),
        native('m', 'uuid'),
      ].map((c) => keyFromText(c, text)),
    ).toEqual([
      'CAST(x AS SIGNED)',
      'CAST(x AS UNSIGNED)',
      'CAST(x AS SIGNED)',
      'CAST(x AS UNSIGNED)',
      'CAST(x AS DECIMAL(38,10))',
      'CAST(x AS DOUBLE)',
      'CAST(x AS DATE)',
      'CAST(x AS TIME(6))',
      'CAST(x AS DATETIME(6))',
      'CAST(x AS DATETIME(6))',
      'UNHEX(x)',
      'CONVERT(x USING latin1) COLLATE latin1_swedish_ci',
      'x',
    ]);
  });

  it('turns the key values it read into wire values', () => {
    expect(keyConverter(native('a', 'int'), 'int')('42')).toBe(42);
    expect(keyConverter(native('a', 'bigint'), 'bigint')('9007199254740993')).toBe(
      '9007199254740993',
    );
    expect(keyConverter(native('a', 'bit', 'bit(1)'), 'bool')('0')).toBe(false);
    expect(keyConverter(native('a', 'tinyint', 'tinyint(1)'), 'bool')(1)).toBe(true);
    expect(
      keyConverter(native('a', 'timestamp'), 'timestamptz')('2026-01-02 03:04:05.000000'),
    ).toBe('2026-01-02T03:04:05Z');
    expect(keyConverter(native('a', 'varbinary'), 'binary')(Buffer.from([0, 255]))).toBe('AP8=');
    expect(keyConverter(native('a', 'float'), 'float')(0.10000000149011612)).toBe(0.1);
  });

  it('reads each logged key once, joined to its row, in the order of its latest change', () => {
    expect(
      changelogSql({
        changelog: 'deltasync_changelog',
        table: 'children',
        key: [
          native('id', 'int', 'int(11)'),
          native('code', 'varchar', 'varchar(10)', {
            charset: 'utf8mb4',
            collation: 'utf8mb4_general_ci',
          }),
        ],
        selects: ['t.`id`', 't.`code`', 't.`label`'],
        window: 'log_id > 10 AND log_id <= 20',
      }),
    ).toBe(
      "SELECT t.`id` IS NOT NULL AS found, CAST(JSON_UNQUOTE(JSON_EXTRACT(c.key_values, '$[0]')) AS SIGNED), " +
        "CONVERT(JSON_UNQUOTE(JSON_EXTRACT(c.key_values, '$[1]')) USING utf8mb4) COLLATE utf8mb4_general_ci, " +
        't.`id`, t.`code`, t.`label` ' +
        'FROM (SELECT key_values, MAX(log_id) AS last_id FROM `deltasync_changelog` ' +
        "WHERE table_name = 'children' AND (log_id > 10 AND log_id <= 20) GROUP BY key_values) c " +
        "LEFT JOIN `children` t ON t.`id` = CAST(JSON_UNQUOTE(JSON_EXTRACT(c.key_values, '$[0]')) AS SIGNED) " +
        "AND t.`code` = CONVERT(JSON_UNQUOTE(JSON_EXTRACT(c.key_values, '$[1]')) USING utf8mb4) COLLATE utf8mb4_general_ci " +
        'ORDER BY c.last_id',
    );
    expect(() =>
      positionWindowSql({ high: '1 OR 1=1', gaps: [] }, { high: '2', gaps: [] }, 'log'),
    ).toThrow(ConfigError);
  });
});

describe('mysql capture check', () => {
  const request = {
    changelog: 'deltasync_changelog',
    tables: [{ table: 'album', key: [ID] }],
  };
  const installed = (events: string[]) =>
    events.map((e) => ({
      table_name: 'album',
      trigger_name: `deltasync_changelog_album_${e}`,
      statement: 'INSERT INTO `deltasync_changelog` (table_name, op, key_values) VALUES (...)',
    }));

  it('passes when the change log and the three triggers are there', () => {
    expect(missingCapture(request, installed(['ins', 'upd', 'del']), true)).toBeNull();
  });

  it('names each table and event whose trigger is missing', () => {
    expect(missingCapture(request, installed(['ins', 'del']), true)).toEqual({
      message:
        'change capture is not installed for album (update): their writes would never reach the change log',
      triggersHidden: false,
    });
    expect(missingCapture(request, [], true)?.triggersHidden).toBe(true);
    expect(missingCapture(request, installed(['ins', 'upd', 'del']), false)?.message).toBe(
      'the change log deltasync_changelog does not exist',
    );
  });

  it('does not count a trigger of that name that writes elsewhere', () => {
    const other = installed(['ins', 'upd', 'del']).map((t) => ({ ...t, statement: 'SET @x = 1' }));
    expect(missingCapture(request, other, true)?.message).toMatch(
      /album \(insert\), album \(update\)/,
    );
  });
});
