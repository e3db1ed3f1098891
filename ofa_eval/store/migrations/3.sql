-- Schema version 3: the number of draws behind a protocol result is exact at any pool size.
-- With --exact it counts every possible draw, which exceeds 64 bits for lab-sized pools (21
-- configurations x 30 seeds at r = 10: about 2.1e20); HUGEINT holds 128 bits.

ALTER TABLE protocol_result_table ALTER draws TYPE HUGEINT;
